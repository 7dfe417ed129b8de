"""Reference: the same GPT + LoRA (r 8 on q, v) training step in PyTorch, for scripts/bench-train.ts.

Prints one JSON line: {"tokensPerSec": ..., "msPerStep": ..., "peakRssMb": ...}.
"""
import argparse, json, math, resource, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=12)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
L, C, H, T, B, V, R = 4, 128, 4, 64, 8, 4096, 8


class LoRALinear(nn.Module):
    """Frozen base projection (GPT-2 Conv1D layout [in, out]) + LoRA on chosen output sections."""

    def __init__(self, cin, cout, sections=None):
        super().__init__()
        self.w = nn.Parameter(torch.randn(cin, cout) * 0.02, requires_grad=False)
        self.b = nn.Parameter(torch.zeros(cout), requires_grad=False)
        self.sections = sections
        if sections:
            self.A = nn.Parameter(torch.rand(cin, R) * 2 / math.sqrt(cin) - 1 / math.sqrt(cin))
            self.Bs = nn.ParameterList([nn.Parameter(torch.zeros(R, C)) for _ in sections])

    def forward(self, x):
        y = x @ self.w + self.b
        if not self.sections:
            return y
        xa = (x @ self.A) * 2.0
        parts = list(y.split(C, dim=-1))
        for s, Bm in zip(self.sections, self.Bs):
            parts[s] = parts[s] + xa @ Bm
        return torch.cat(parts, dim=-1)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.attn = LoRALinear(C, 3 * C, sections=[0, 2])
        self.proj = LoRALinear(C, C)
        self.fc, self.out = LoRALinear(C, 4 * C), LoRALinear(4 * C, C)
        for m in (self.ln1, self.ln2):
            m.requires_grad_(False)

    def forward(self, x):
        q, k, v = self.attn(self.ln1(x)).split(C, dim=-1)
        sh = lambda t: t.view(B, T, H, C // H).transpose(1, 2)
        y = F.scaled_dot_product_attention(sh(q), sh(k), sh(v), is_causal=True) if hasattr(F, "scaled_dot_product_attention") else None
        if y is None:
            att = (sh(q) @ sh(k).transpose(-2, -1)) / math.sqrt(C // H)
            att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
            y = att @ sh(v)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Parameter(torch.randn(V, C) * 0.02, requires_grad=False)
        self.wpe = nn.Parameter(torch.randn(T, C) * 0.02, requires_grad=False)
        self.h = nn.ModuleList([Block() for _ in range(L)])
        self.lnf = nn.LayerNorm(C)
        self.lnf.requires_grad_(False)

    def forward(self, idx):
        x = self.wte[idx] + self.wpe[:T]
        for blk in self.h:
            x = blk(x)
        return self.lnf(x) @ self.wte.t()


m = GPT()
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
data = torch.randint(0, V, (B, T + 1))


def step():
    logits = m(data[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, V), data[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()


for _ in range(2):
    step()
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
dt = (time.perf_counter() - t0) / a.steps
print(json.dumps({"tokensPerSec": round(B * T / dt), "msPerStep": round(dt * 1000), "peakRssMb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
