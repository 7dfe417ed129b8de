#!/usr/bin/env python3
"""An independent reference for the Llama family (llama, qwen2, mistral), written from Hugging Face's published
modeling code with nothing but PyTorch (Debian's python3-torch): RMSNorm computed in f32, rotary embeddings in the
rotate_half layout with rope_scaling none / linear / llama3, repeat_kv for grouped-query attention, a SwiGLU MLP and
a tied or untied head. It reads the same Hub checkpoint files the TypeScript engine reads (config.json, then
model.safetensors or the shards model.safetensors.index.json names; F32, F16 or BF16), parsing safetensors by hand.

    /usr/bin/python3 scripts/reference_llama.py CHECKPOINT_DIR '[[1, 2, 3], [4, 5, 6]]' [PEFT_ADAPTER_DIR]

prints {"logits": [...]} : the logits [B*T, vocab] as one flat list of f32 values. With a PEFT adapter folder
(adapter_model.safetensors, adapter_config.json: lora_A [r, in], lora_B [out, r], scale lora_alpha / r, as PEFT
applies it: y = x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ), the logits are the adapted model's, and it adds "loss" (mean
next-token cross-entropy of ids[:, 1:] given ids[:, :-1]) and "grads": that loss's gradient for every lora_A and
lora_B, by PEFT key, flat.
"""
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        raw = bytearray(data[base + begin : base + end])
        t = torch.frombuffer(raw, dtype=DTYPES[e["dtype"]]) if raw else torch.empty(0, dtype=DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"]).to(torch.float32)
    return out


def read_checkpoint(d):
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(d, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        with open(index) as f:
            for file in sorted(set(json.load(f)["weight_map"].values())):
                tensors.update(read_safetensors(os.path.join(d, file)))
    else:
        tensors = read_safetensors(os.path.join(d, "model.safetensors"))
    return config, tensors


def inv_freq(config, head_dim):
    base = config.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float64) / head_dim))
    s = config.get("rope_scaling")
    kind = None if s is None else s.get("rope_type", s.get("type"))
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / s["factor"]
    if kind == "llama3":
        factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old = s["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise SystemExit(f"unsupported rope_scaling {kind}")


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, w, eps):
    x32 = x.to(torch.float32)
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))


LORA = {}  # module -> (A [r, in], B [out, r], scale), set from a PEFT adapter


def linear(x, t, name):
    y = x @ t[name + ".weight"].T
    y = y + t[name + ".bias"] if name + ".bias" in t else y
    if name in LORA:
        a, b, scale = LORA[name]
        y = y + scale * ((x @ a.T) @ b.T)
    return y


def load_adapter(d):
    with open(os.path.join(d, "adapter_config.json")) as f:
        cfg = json.load(f)
    scale = cfg["lora_alpha"] / cfg["r"]
    tensors = read_safetensors(os.path.join(d, "adapter_model.safetensors"))
    leaves = {}
    for key, value in tensors.items():
        leaves[key] = value.clone().requires_grad_(True)
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            module = key[len("base_model.model.") : -len(".lora_A.weight")]
            b_key = key.replace(".lora_A.weight", ".lora_B.weight")
            LORA[module] = (leaves[key], leaves[b_key], scale)
    return leaves


def forward(config, t, ids):
    B, T = ids.shape
    H = config["hidden_size"]
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads", nh)
    hd = config.get("head_dim", H // nh)
    eps = config.get("rms_norm_eps", 1e-6)
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq(config, hd))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(torch.float32), emb.sin().to(torch.float32)
    mask = torch.full((T, T), float("-inf")).triu(1)
    x = t["model.embed_tokens.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, t[p + "input_layernorm.weight"], eps)
        q = linear(h, t, p + "self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
        k = linear(h, t, p + "self_attn.k_proj").view(B, T, nkv, hd).transpose(1, 2)
        v = linear(h, t, p + "self_attn.v_proj").view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv  # repeat_kv
        k = k[:, :, None].expand(B, nkv, rep, T, hd).reshape(B, nh, T, hd)
        v = v[:, :, None].expand(B, nkv, rep, T, hd).reshape(B, nh, T, hd)
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + mask, dim=-1, dtype=torch.float32)
        y = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + linear(y, t, p + "self_attn.o_proj")
        h = rms_norm(x, t[p + "post_attention_layernorm.weight"], eps)
        gate = linear(h, t, p + "mlp.gate_proj")
        x = x + linear(torch.nn.functional.silu(gate) * linear(h, t, p + "mlp.up_proj"), t, p + "mlp.down_proj")
    x = rms_norm(x, t["model.norm.weight"], eps)
    head = t["model.embed_tokens.weight"] if config.get("tie_word_embeddings", False) else t["lm_head.weight"]
    y = x @ head.T
    if "lm_head" in LORA:  # PEFT's LoRA on the head: the (tied) weight as is, plus the update
        a, b, scale = LORA["lm_head"]
        y = y + scale * ((x @ a.T) @ b.T)
    return y.reshape(B * T, -1)


def main():
    torch.set_num_threads(1)
    config, tensors = read_checkpoint(sys.argv[1])
    ids = torch.tensor(json.loads(sys.argv[2]), dtype=torch.int64)
    if len(sys.argv) < 4:
        with torch.no_grad():
            logits = forward(config, tensors, ids)
        print(json.dumps({"logits": logits.flatten().tolist()}))
        return
    leaves = load_adapter(sys.argv[3])
    logits = forward(config, tensors, ids)
    B, T = ids.shape
    inputs, targets = ids[:, :-1], ids[:, 1:]
    loss = torch.nn.functional.cross_entropy(forward(config, tensors, inputs), targets.reshape(-1))
    loss.backward()
    grads = {k: v.grad.flatten().tolist() for k, v in leaves.items()}
    out = {"logits": logits.detach().flatten().tolist(), "loss": loss.item(), "grads": grads}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
