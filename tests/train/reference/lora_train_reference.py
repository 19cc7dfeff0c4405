"""Reference for hfrun's LoRA training in PEFT's format: a tiny base model (Llama, or GPT-2 with
its Conv1D layers: PEFT's fan_in_fan_out) and an existing adapter with nonzero A and B
(adapter_config.json + adapter_model.safetensors as peft's save_pretrained writes them),
trained further in PyTorch float64 on token windows (shuffle off): y = W x + s * B A x,
s = alpha / r (alpha / sqrt(r) with use_rslora), the base frozen, AdamW on A, B and the
modules_to_save copies (decay on ndim >= 2 only), clipping, accumulation. The merged weights
W + s * B A of the starting adapter are written too (what `hfrun merge` must produce).

    /usr/bin/python3 lora_train_reference.py OUT_DIR llama|gpt2

Writes OUT_DIR/model/ (config.json, model.safetensors), OUT_DIR/adapter/, OUT_DIR/stream.json
and OUT_DIR/expected.json (per-step loss and grad norm, the final adapter tensors by PEFT name,
the merged weights of the starting adapter).
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models",
                                "reference"))
import llama_reference as llama  # noqa: E402
from bert_cls_train_reference import save_safetensors  # noqa: E402

out_dir, family = sys.argv[1], sys.argv[2]
torch.manual_seed(2468 if family == "llama" else 1357)
torch.set_num_threads(1)
V, SEQ, MICRO, ACCUM, STEPS = 53, 8, 2, 2, 4
LR, CLIP, WD = 2e-2, 1.0, 0.1


def randn(*shape, std=0.3):
    return (torch.randn(*shape, dtype=torch.float64) * std).float().double()


if family == "llama":
    cfg = dict(model_type="llama", vocab_size=V, hidden_size=24, intermediate_size=40,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=32, rms_norm_eps=1e-5, rope_theta=10000.0,
               tie_word_embeddings=False)
    base = llama.make_params(cfg)
    targets = ["q_proj", "v_proj", "down_proj"]
    lora = dict(r=4, lora_alpha=8, use_rslora=False, modules_to_save=None)
    fan_in_fan_out = False
    adapted = [n[:-len(".weight")] for n in base if n.endswith(".weight")
               and any(n[:-len(".weight")].endswith("." + t) for t in targets)]
else:
    C, L, H = 24, 2, 3
    cfg = dict(model_type="gpt2", vocab_size=V, n_positions=16, n_embd=C, n_layer=L, n_head=H,
               layer_norm_epsilon=1e-5, activation_function="gelu_new", embd_pdrop=0.0,
               resid_pdrop=0.0, attn_pdrop=0.0)
    base = {"transformer.wte.weight": randn(V, C), "transformer.wpe.weight": randn(16, C)}
    for i in range(L):
        q = f"transformer.h.{i}."
        base[q + "ln_1.weight"] = 1 + randn(C, std=0.1)
        base[q + "ln_1.bias"] = randn(C, std=0.1)
        base[q + "attn.c_attn.weight"] = randn(C, 3 * C)
        base[q + "attn.c_attn.bias"] = randn(3 * C, std=0.1)
        base[q + "attn.c_proj.weight"] = randn(C, C)
        base[q + "attn.c_proj.bias"] = randn(C, std=0.1)
        base[q + "ln_2.weight"] = 1 + randn(C, std=0.1)
        base[q + "ln_2.bias"] = randn(C, std=0.1)
        base[q + "mlp.c_fc.weight"] = randn(C, 4 * C)
        base[q + "mlp.c_fc.bias"] = randn(4 * C, std=0.1)
        base[q + "mlp.c_proj.weight"] = randn(4 * C, C)
        base[q + "mlp.c_proj.bias"] = randn(C, std=0.1)
    base["transformer.ln_f.weight"] = 1 + randn(C, std=0.1)
    base["transformer.ln_f.bias"] = randn(C, std=0.1)
    targets = ["c_attn", "c_fc"]
    lora = dict(r=3, lora_alpha=6, use_rslora=True, modules_to_save=["ln_f"])
    fan_in_fan_out = True
    adapted = [f"transformer.h.{i}.{m}" for i in range(L) for m in ("attn.c_attn", "mlp.c_fc")]

for t in base.values():
    t.requires_grad_(False)
r = lora["r"]
scale = lora["lora_alpha"] / (math.sqrt(r) if lora["use_rslora"] else r)


def out_in(name):  # the adapted layer's (out, in) features
    w = base[name + ".weight"]
    return (w.shape[1], w.shape[0]) if fan_in_fan_out else (w.shape[0], w.shape[1])


train = {}
for name in adapted:
    o, i = out_in(name)
    train[name + ".lora_A.weight"] = randn(r, i, std=0.2)
    train[name + ".lora_B.weight"] = randn(o, r, std=0.2)  # nonzero: a trained adapter
for m in lora["modules_to_save"] or []:
    for n in list(base):
        if n.startswith("transformer." + m + "."):
            train[n] = base[n].clone()
for t in train.values():
    t.requires_grad_(True)

os.makedirs(os.path.join(out_dir, "model"), exist_ok=True)
os.makedirs(os.path.join(out_dir, "adapter"), exist_ok=True)
json.dump(cfg, open(os.path.join(out_dir, "model", "config.json"), "w"))
save_safetensors(os.path.join(out_dir, "model", "model.safetensors"), base)
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny",
           "r": r, "lora_alpha": lora["lora_alpha"], "lora_dropout": 0.0,
           "target_modules": targets, "modules_to_save": lora["modules_to_save"],
           "fan_in_fan_out": fan_in_fan_out, "bias": "none", "use_rslora": lora["use_rslora"],
           "use_dora": False, "init_lora_weights": True, "layers_to_transform": None,
           "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}},
          open(os.path.join(out_dir, "adapter", "adapter_config.json"), "w"))
save_safetensors(os.path.join(out_dir, "adapter", "adapter_model.safetensors"),
                 {"base_model.model." + n: t for n, t in train.items()})


def effective():
    """The base with W + s * B A on every adapted layer and the modules_to_save copies."""
    p = dict(base)
    for name in adapted:
        delta = scale * train[name + ".lora_B.weight"] @ train[name + ".lora_A.weight"]
        p[name + ".weight"] = base[name + ".weight"] + (delta.t() if fan_in_fan_out else delta)
    for n, t in train.items():
        if ".lora_" not in n:
            p[n] = t
    return p


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gpt2_forward(p, ids):
    t, C, H = ids.size(1), cfg["n_embd"], cfg["n_head"]
    D = C // H
    x = F.embedding(ids, p["transformer.wte.weight"]) + p["transformer.wpe.weight"][:t]
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(cfg["n_layer"]):
        q = f"transformer.h.{i}."
        h = F.layer_norm(x, (C,), p[q + "ln_1.weight"], p[q + "ln_1.bias"], 1e-5)
        qkv = h @ p[q + "attn.c_attn.weight"] + p[q + "attn.c_attn.bias"]
        qs, ks, vs = (z.view(ids.size(0), t, H, D).transpose(1, 2) for z in qkv.split(C, dim=2))
        w = torch.softmax((qs @ ks.transpose(-1, -2) / math.sqrt(D)).masked_fill(~mask, float("-inf")), -1)
        y = (w @ vs).transpose(1, 2).reshape(ids.size(0), t, C)
        x = x + y @ p[q + "attn.c_proj.weight"] + p[q + "attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), p[q + "ln_2.weight"], p[q + "ln_2.bias"], 1e-5)
        x = x + gelu_new(h @ p[q + "mlp.c_fc.weight"] + p[q + "mlp.c_fc.bias"]) @ p[q + "mlp.c_proj.weight"] \
            + p[q + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], 1e-5)
    return x @ p["transformer.wte.weight"].t()


def forward(ids):
    p = effective()
    return llama.forward(cfg, p, ids) if family == "llama" else gpt2_forward(p, ids)


merged = {n + ".weight": effective()[n + ".weight"].detach().reshape(-1).tolist() for n in adapted[:2]}
G = MICRO * ACCUM
stream = torch.randint(0, V, (STEPS * G * SEQ + 1,))
json.dump(stream.tolist(), open(os.path.join(out_dir, "stream.json"), "w"))
params = list(train.values())
opt = torch.optim.AdamW([{"params": [t for t in params if t.dim() >= 2]},
                         {"params": [t for t in params if t.dim() < 2], "weight_decay": 0.0}],
                        lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=WD)
steps = []
for s in range(STEPS):
    opt.zero_grad()
    total = 0.0
    for m in range(ACCUM):
        first = s * G + m * MICRO
        wins = torch.stack([stream[i * SEQ: i * SEQ + SEQ + 1] for i in range(first, first + MICRO)])
        loss = F.cross_entropy(forward(wins[:, :-1]).reshape(-1, V), wins[:, 1:].reshape(-1))
        (loss / ACCUM).backward()
        total += loss.item() / ACCUM
    norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
    opt.step()
    steps.append({"loss": total, "grad_norm": norm.item()})
json.dump({"family": family, "vocab": V, "seq_len": SEQ, "micro_batch": MICRO, "accum": ACCUM,
           "steps": STEPS, "lr": LR, "clip": CLIP, "weight_decay": WD, "train_steps": steps,
           "scale": scale, "merged": merged,
           "final_adapter": {"base_model.model." + n: t.detach().reshape(-1).tolist()
                             for n, t in train.items()}},
          open(os.path.join(out_dir, "expected.json"), "w"))
