#!/usr/bin/env python3
"""PyTorch timing for scripts/bench-llm.ts: the reference model of scripts/reference_llama.py on one thread, on the
same checkpoint: forward tokens/s (batch B, sequence T, no grad) and LoRA training tokens/s (r 8 on q, k, v, o,
forward + backward + Adam on A and B), each the best of `steps` runs after one warm-up, on THREADS threads.

    /usr/bin/python3 scripts/bench_llm_torch.py CHECKPOINT_DIR T STEPS [THREADS=1] [B=1]
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_llama as ref  # noqa: E402


def main():
    T, steps = int(sys.argv[2]), int(sys.argv[3])
    threads, B = (int(a) for a in (sys.argv[4:6] + ["1", "1"][len(sys.argv[4:6]) :]))
    torch.set_num_threads(threads)
    config, tensors = ref.read_checkpoint(sys.argv[1])
    ids = torch.arange(B * T, dtype=torch.int64).reshape(B, T) * 7919 % 257
    with torch.no_grad():
        ref.forward(config, tensors, ids)
        best = float("inf")
        for _ in range(steps):
            t0 = time.perf_counter()
            ref.forward(config, tensors, ids)
            best = min(best, time.perf_counter() - t0)
    fwd = B * T / best
    H = config["hidden_size"]
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads", nh)
    hd = config.get("head_dim", H // nh)
    params = []
    for i in range(config["num_hidden_layers"]):
        for m, out in (("q_proj", nh * hd), ("k_proj", nkv * hd), ("v_proj", nkv * hd), ("o_proj", H)):
            fan_in = nh * hd if m == "o_proj" else H
            a = (torch.randn(8, fan_in) * 0.01).requires_grad_(True)
            b = torch.zeros(out, 8).requires_grad_(True)
            ref.LORA[f"model.layers.{i}.self_attn.{m}"] = (a, b, 2.0)
            params += [a, b]
    opt = torch.optim.Adam(params, lr=1e-3)
    x, y = ids[:, :-1], ids[:, 1:]
    best = float("inf")
    for k in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(ref.forward(config, tensors, x), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k > 0:
            best = min(best, time.perf_counter() - t0)
    print(json.dumps({"forwardTokensPerSec": fwd, "trainTokensPerSec": B * (T - 1) / best}))


if __name__ == "__main__":
    main()
