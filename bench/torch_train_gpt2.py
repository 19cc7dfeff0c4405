"""The PyTorch baseline for `hfrun bench train`: the same GPT-2 (HF GPT2LMHeadModel math, written
out as in tests/models/reference/gpt2_reference.py), AdamW, the same batch shape and threads,
optionally bf16 via torch.autocast. Prints one JSON line like hfrun's.

    /usr/bin/python3 bench/torch_train_gpt2.py --n-layer 12 --n-embd 768 --n-head 12 \
        --vocab 50257 --batch 4 --seq 64 --steps 6 --threads 2 [--bf16]
(Debian's python3-torch; install libopenblas0-openmp with it or it runs on the reference BLAS.)

On a GPU: --device cuda (eager; f32 matmuls without TF32, as hfrun's), and --compile to run the
model's forward through torch.compile. Step times wait for the GPU (torch.cuda.synchronize).
"""
import argparse
import math

import torch
import torch.nn.functional as F

from torch_train_loop import run

ap = argparse.ArgumentParser()
for k, v in dict(n_layer=12, n_embd=768, n_head=12, vocab=50257, n_positions=1024, batch=4, seq=64,
                 steps=6, warmup=2, threads=2).items():
    ap.add_argument("--" + k.replace("_", "-"), type=int, default=v)
ap.add_argument("--bf16", action="store_true")
ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
ap.add_argument("--compile", action="store_true", help="torch.compile the forward")
a = ap.parse_args()
dev = torch.device(a.device)
cuda = dev.type == "cuda"
if cuda:
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 GEMMs in f32, as hfrun's cuBLASLt path
    torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(a.threads)
torch.manual_seed(0)
C, L, H, V = a.n_embd, a.n_layer, a.n_head, a.vocab


def param(*shape, std=0.02, fill=None):
    t = torch.full(shape, fill) if fill is not None else torch.randn(*shape) * std
    return t.to(dev).requires_grad_(True)


P = {"wte": param(V, C), "wpe": param(a.n_positions, C), "lnf_w": param(C, fill=1.0), "lnf_b": param(C, fill=0.0)}
for i in range(L):
    P.update({f"{i}.ln1_w": param(C, fill=1.0), f"{i}.ln1_b": param(C, fill=0.0),
              f"{i}.attn_w": param(C, 3 * C), f"{i}.attn_b": param(3 * C, fill=0.0),
              f"{i}.proj_w": param(C, C), f"{i}.proj_b": param(C, fill=0.0),
              f"{i}.ln2_w": param(C, fill=1.0), f"{i}.ln2_b": param(C, fill=0.0),
              f"{i}.fc_w": param(C, 4 * C), f"{i}.fc_b": param(4 * C, fill=0.0),
              f"{i}.fc2_w": param(4 * C, C), f"{i}.fc2_b": param(C, fill=0.0)})
decay = [p for p in P.values() if p.dim() >= 2]
no_decay = [p for p in P.values() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=6e-4, betas=(0.9, 0.95), eps=1e-8)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def forward(ids, targets):
    B, T = ids.shape
    x = F.embedding(ids, P["wte"]) + F.embedding(torch.arange(T, device=ids.device), P["wpe"])
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=ids.device))
    D = C // H
    for i in range(L):
        h = F.layer_norm(x, (C,), P[f"{i}.ln1_w"], P[f"{i}.ln1_b"])
        q, k, v = (h @ P[f"{i}.attn_w"] + P[f"{i}.attn_b"]).split(C, dim=2)
        q, k, v = (z.view(B, T, H, D).transpose(1, 2) for z in (q, k, v))
        w = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        w = torch.where(mask, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype,
                                              device=w.device)).softmax(-1)
        y = (w @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ P[f"{i}.proj_w"] + P[f"{i}.proj_b"]
        h = F.layer_norm(x, (C,), P[f"{i}.ln2_w"], P[f"{i}.ln2_b"])
        x = x + gelu_new(h @ P[f"{i}.fc_w"] + P[f"{i}.fc_b"]) @ P[f"{i}.fc2_w"] + P[f"{i}.fc2_b"]
    x = F.layer_norm(x, (C,), P["lnf_w"], P["lnf_b"])
    logits = x @ P["wte"].t()
    return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))


run(forward, list(P.values()), opt, a, V)
