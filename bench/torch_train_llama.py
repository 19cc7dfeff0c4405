"""The PyTorch baseline for `hfrun bench train` on a Llama config: the same decoder (HF
LlamaForCausalLM math, written out as in tests/models/reference/llama_reference.py: RMSNorm,
rotate-half RoPE, grouped-query attention, SwiGLU, tied or untied head), AdamW with decay on
matrices only, clipping at 1.0, the same batch shape and threads, optionally bf16 via
torch.autocast. Default shape: SmolLM-135M (hidden 576, 30 layers, 9 heads, 3 KV heads,
intermediate 1536, vocab 49152, tied). Prints one JSON line like hfrun's.

    /usr/bin/python3 bench/torch_train_llama.py --batch 4 --seq 64 --steps 4 --threads 2 [--bf16]
(Debian's python3-torch; install libopenblas0-openmp with it or it runs on the reference BLAS.)
On a GPU: --device cuda (f32 matmuls without TF32, as hfrun's) and --compile.
"""
import argparse
import math

import torch
import torch.nn.functional as F

from torch_train_loop import run

ap = argparse.ArgumentParser()
for k, v in dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152,
                 batch=4, seq=64, steps=6, warmup=2, threads=2).items():
    ap.add_argument("--" + k.replace("_", "-"), type=int, default=v)
ap.add_argument("--untied", action="store_true")
ap.add_argument("--rope-theta", type=float, default=10000.0)
ap.add_argument("--bf16", action="store_true")
ap.add_argument("--device", default="cpu")
ap.add_argument("--compile", action="store_true")
a = ap.parse_args()
dev = torch.device(a.device)
cuda = dev.type == "cuda"
if cuda:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(a.threads)
torch.manual_seed(0)
C, L, H, Hkv, I, V = a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate, a.vocab
D = C // H


def param(*shape, std=0.02, fill=None):
    t = torch.full(shape, fill) if fill is not None else torch.randn(*shape) * std
    return t.to(dev).requires_grad_(True)


P = {"embed": param(V, C), "norm": param(C, fill=1.0)}
if a.untied:
    P["lm_head"] = param(V, C)
for i in range(L):
    P.update({f"{i}.q": param(H * D, C), f"{i}.k": param(Hkv * D, C), f"{i}.v": param(Hkv * D, C),
              f"{i}.o": param(C, H * D), f"{i}.gate": param(I, C), f"{i}.up": param(I, C),
              f"{i}.down": param(C, I), f"{i}.in_norm": param(C, fill=1.0),
              f"{i}.post_norm": param(C, fill=1.0)})
decay = [p for p in P.values() if p.dim() >= 2]
no_decay = [p for p in P.values() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=6e-4, betas=(0.9, 0.95), eps=1e-8)


def rms_norm(x, w, eps=1e-5):
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x):
    return torch.cat((-x[..., D // 2:], x[..., :D // 2]), dim=-1)


def forward(ids, targets):
    B, T = ids.shape
    inv = 1.0 / (a.rope_theta ** (torch.arange(0, D, 2, device=ids.device).float() / D))
    freqs = torch.outer(torch.arange(T, device=ids.device).float(), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x = F.embedding(ids, P["embed"])
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=ids.device))
    for i in range(L):
        h = rms_norm(x, P[f"{i}.in_norm"])
        q = F.linear(h, P[f"{i}.q"]).view(B, T, H, D).transpose(1, 2)
        k = F.linear(h, P[f"{i}.k"]).view(B, T, Hkv, D).transpose(1, 2)
        v = F.linear(h, P[f"{i}.v"]).view(B, T, Hkv, D).transpose(1, 2)
        q = q * cos.to(q.dtype) + rotate_half(q) * sin.to(q.dtype)
        k = k * cos.to(k.dtype) + rotate_half(k) * sin.to(k.dtype)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        w = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        w = torch.where(mask, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype,
                                              device=w.device)).softmax(-1)
        y = w @ v
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, H * D), P[f"{i}.o"])
        h = rms_norm(x, P[f"{i}.post_norm"])
        x = x + F.linear(F.silu(F.linear(h, P[f"{i}.gate"])) * F.linear(h, P[f"{i}.up"]), P[f"{i}.down"])
    x = rms_norm(x, P["norm"])
    logits = F.linear(x, P["lm_head"] if a.untied else P["embed"])
    return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))


run(forward, list(P.values()), opt, a, V)
