"""Reference numbers for hfrun's GPT-2: logits, loss and every parameter gradient of a tiny
GPT-2 with random weights, computed by PyTorch (Debian's python3-torch) with the exact math of
Hugging Face's GPT2LMHeadModel (transformers is not needed: the forward is written out below,
Conv1D weights [in, out], gelu_new, tied lm_head, causal mask, layer_norm_epsilon). Also the
greedy continuation of a prompt (argmax of the full forward's last logits, token by token), the
ids that hfrun's generate() must reproduce.

    /usr/bin/python3 gpt2_reference.py OUT.json
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
torch.set_num_threads(1)
CFG = dict(vocab_size=61, n_positions=12, n_embd=24, n_layer=2, n_head=3,
           layer_norm_epsilon=1e-5, activation_function="gelu_new")
B, T = 2, 9
V, C, L, H = CFG["vocab_size"], CFG["n_embd"], CFG["n_layer"], CFG["n_head"]
D = C // H


def randn(*shape, std=0.3):
    return (torch.randn(*shape, dtype=torch.float64) * std).float()


params = {"wte.weight": randn(V, C), "wpe.weight": randn(CFG["n_positions"], C)}
for i in range(L):
    p = f"h.{i}."
    params[p + "ln_1.weight"] = 1 + randn(C, std=0.1)
    params[p + "ln_1.bias"] = randn(C, std=0.1)
    params[p + "attn.c_attn.weight"] = randn(C, 3 * C)
    params[p + "attn.c_attn.bias"] = randn(3 * C, std=0.1)
    params[p + "attn.c_proj.weight"] = randn(C, C)
    params[p + "attn.c_proj.bias"] = randn(C, std=0.1)
    params[p + "ln_2.weight"] = 1 + randn(C, std=0.1)
    params[p + "ln_2.bias"] = randn(C, std=0.1)
    params[p + "mlp.c_fc.weight"] = randn(C, 4 * C)
    params[p + "mlp.c_fc.bias"] = randn(4 * C, std=0.1)
    params[p + "mlp.c_proj.weight"] = randn(4 * C, C)
    params[p + "mlp.c_proj.bias"] = randn(C, std=0.1)
params["ln_f.weight"] = 1 + randn(C, std=0.1)
params["ln_f.bias"] = randn(C, std=0.1)
for t in params.values():
    t.requires_grad_(True)

ids = torch.randint(0, V, (B, T))
targets = torch.randint(0, V, (B, T))
targets[0, 3] = -100  # an ignored target


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def conv1d(x, w, b):  # HF Conv1D: x @ w + b with w [in, out]
    return torch.addmm(b, x.reshape(-1, x.size(-1)), w).view(*x.shape[:-1], w.size(-1))


def forward(p, ids):
    t = ids.size(1)
    x = F.embedding(ids, p["wte.weight"]) + F.embedding(torch.arange(t), p["wpe.weight"])
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    eps = CFG["layer_norm_epsilon"]
    for i in range(L):
        q = f"h.{i}."
        h = F.layer_norm(x, (C,), p[q + "ln_1.weight"], p[q + "ln_1.bias"], eps)
        qkv = conv1d(h, p[q + "attn.c_attn.weight"], p[q + "attn.c_attn.bias"])
        qs, ks, vs = qkv.split(C, dim=2)
        qs, ks, vs = (z.view(ids.size(0), t, H, D).transpose(1, 2) for z in (qs, ks, vs))
        w = torch.matmul(qs, ks.transpose(-1, -2)) / torch.full([], D ** 0.5)
        w = torch.where(mask, w, torch.tensor(torch.finfo(w.dtype).min))
        w = torch.softmax(w, dim=-1)
        y = torch.matmul(w, vs).transpose(1, 2).contiguous().view(ids.size(0), t, C)
        x = x + conv1d(y, p[q + "attn.c_proj.weight"], p[q + "attn.c_proj.bias"])
        h = F.layer_norm(x, (C,), p[q + "ln_2.weight"], p[q + "ln_2.bias"], eps)
        m = gelu_new(conv1d(h, p[q + "mlp.c_fc.weight"], p[q + "mlp.c_fc.bias"]))
        x = x + conv1d(m, p[q + "mlp.c_proj.weight"], p[q + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps)
    return torch.matmul(x, p["wte.weight"].t())


logits = forward(params, ids)
loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100)
loss.backward()

# Greedy generation: 8 new tokens from a 3-token prompt, re-running the full forward each step
# (no cache). min_margin (top-1 minus top-2 logit) shows how far each argmax is from a tie.
GEN_PROMPT, GEN_NEW = ids[0, :3].tolist(), 8
with torch.no_grad():
    seq, margins = list(GEN_PROMPT), []
    for _ in range(GEN_NEW):
        last = forward(params, torch.tensor([seq]))[0, -1]
        top2 = torch.topk(last, 2).values
        margins.append((top2[0] - top2[1]).item())
        seq.append(int(torch.argmax(last)))

flat = lambda t: t.detach().reshape(-1).tolist()
out = {
    "config": CFG,
    "ids": ids.tolist(),
    "targets": targets.tolist(),
    "params": {k: {"shape": list(v.shape), "data": flat(v)} for k, v in params.items()},
    "logits": flat(logits),
    "loss": loss.item(),
    "grads": {k: flat(v.grad) for k, v in params.items()},
    "generate": {"prompt": GEN_PROMPT, "max_new_tokens": GEN_NEW, "ids": seq,
                 "min_margin": min(margins)},
    "torch_version": torch.__version__,
}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
print(f"wrote {sys.argv[1]}: loss {loss.item():.6f}, greedy ids {seq}")
