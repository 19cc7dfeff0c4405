"""Reference for hfrun's training loop: several optimizer steps of a tiny GPT-2 in PyTorch with
AdamW (or SGD with momentum), global-norm clipping, gradient accumulation and HF's linear warmup
schedule, on batches cut from a token stream exactly as CONTRACT.md says (shuffle off).

    /usr/bin/python3 gpt2_train_reference.py OUT_DIR [adamw|sgd|scaler]

`scaler` is AdamW under dynamic loss scaling: torch.cuda.amp.GradScaler itself (its state
machine, unscale_, step and update), on the CPU with its two CUDA-only kernels written out below
as ATen's AmpKernels.cu computes them, and an inf put into one gradient at chosen steps (an
overflow); the learning-rate schedule skips with the optimizer, as Accelerate's
AcceleratedScheduler does.

Writes OUT_DIR/model/{config.json, model.safetensors} (the starting weights, HF names),
OUT_DIR/stream.json (the token stream) and OUT_DIR/expected.json (loss, lr and grad norm per
step, and the final weights).
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
out_dir = sys.argv[1]
opt_type = sys.argv[2] if len(sys.argv) > 2 else "adamw"
torch.manual_seed(4321)
torch.set_num_threads(1)

V, P, C, L, H = 61, 16, 24, 2, 3
SEQ, MICRO, ACCUM, STEPS, WARMUP = 8, 2, 2, 5, 2
SCALER = opt_type == "scaler"
INIT_SCALE, GROWTH_INTERVAL, OVERFLOW_STEPS = 2.0 ** 12, 2, (2, 5)  # steps from 0
if SCALER:
    STEPS = 8
LR, CLIP, WD = 5e-3, 0.5, 0.1
D = C // H
cfg = {"model_type": "gpt2", "vocab_size": V, "n_positions": P, "n_embd": C, "n_layer": L, "n_head": H,
       "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "embd_pdrop": 0.0,
       "resid_pdrop": 0.0, "attn_pdrop": 0.0}


def randn(*shape, std=0.2):
    return (torch.randn(*shape, dtype=torch.float64) * std).float()


names = ["wte.weight", "wpe.weight"]
params = {"wte.weight": randn(V, C), "wpe.weight": randn(P, C)}
for i in range(L):
    p = f"h.{i}."
    shapes = {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (C, 3 * C),
              "attn.c_attn.bias": (3 * C,), "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
              "ln_2.weight": (C,), "ln_2.bias": (C,), "mlp.c_fc.weight": (C, 4 * C),
              "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,)}
    for k, s in shapes.items():
        params[p + k] = (1 + randn(*s, std=0.1)) if k.startswith("ln") and k.endswith("weight") else randn(*s)
        names.append(p + k)
params["ln_f.weight"] = 1 + randn(C, std=0.1)
params["ln_f.bias"] = randn(C, std=0.1)
names += ["ln_f.weight", "ln_f.bias"]

# Starting weights in HF layout (safetensors written by hand: u64 header length, JSON, data).
os.makedirs(os.path.join(out_dir, "model"), exist_ok=True)
with open(os.path.join(out_dir, "model", "config.json"), "w") as f:
    json.dump(cfg, f)
header, blobs, offset = {}, [], 0
for n in names:
    t = params[n].contiguous()
    data = t.numpy().tobytes()
    header["transformer." + n] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(out_dir, "model", "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

G = MICRO * ACCUM
n_samples = STEPS * G
stream = torch.randint(0, V, (n_samples * SEQ + 1,))
with open(os.path.join(out_dir, "stream.json"), "w") as f:
    json.dump(stream.tolist(), f)

for t in params.values():
    t.requires_grad_(True)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def forward(p, ids):
    t = ids.size(1)
    x = F.embedding(ids, p["wte.weight"]) + F.embedding(torch.arange(t), p["wpe.weight"])
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(L):
        q = f"h.{i}."
        hh = F.layer_norm(x, (C,), p[q + "ln_1.weight"], p[q + "ln_1.bias"], 1e-5)
        qkv = hh @ p[q + "attn.c_attn.weight"] + p[q + "attn.c_attn.bias"]
        qs, ks, vs = (z.view(ids.size(0), t, H, D).transpose(1, 2) for z in qkv.split(C, dim=2))
        w = torch.matmul(qs, ks.transpose(-1, -2)) / math.sqrt(D)
        w = torch.where(mask, w, torch.tensor(torch.finfo(w.dtype).min)).softmax(-1)
        y = torch.matmul(w, vs).transpose(1, 2).reshape(ids.size(0), t, C)
        x = x + y @ p[q + "attn.c_proj.weight"] + p[q + "attn.c_proj.bias"]
        hh = F.layer_norm(x, (C,), p[q + "ln_2.weight"], p[q + "ln_2.bias"], 1e-5)
        x = x + gelu_new(hh @ p[q + "mlp.c_fc.weight"] + p[q + "mlp.c_fc.bias"]) @ p[q + "mlp.c_proj.weight"] + p[q + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    return x @ p["wte.weight"].t()


# GradScaler on the CPU (torch 1.13 has its kernels for CUDA only).
import torch.cuda.amp.grad_scaler as grad_scaler_module


def non_finite_check_and_unscale_(grads, found_inf, inv_scale):
    for g in grads:
        if not torch.isfinite(g).all():
            found_inf.fill_(1.0)
        if inv_scale.item() != 1.0:
            g.mul_(inv_scale)


def update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    # f32 scale times the f64 factor, narrowed to f32; a grown scale that is not finite is dropped.
    if found_inf.item():
        scale.fill_(float(torch.tensor(scale.item() * backoff_factor, dtype=torch.float32)))
        growth_tracker.fill_(0)
    else:
        successful = growth_tracker.item() + 1
        if successful == growth_interval:
            grown = torch.tensor(scale.item() * growth_factor, dtype=torch.float32)
            if torch.isfinite(grown):
                scale.fill_(grown.item())
            growth_tracker.fill_(0)
        else:
            growth_tracker.fill_(successful)
    return scale


class CpuReplicator:
    def __init__(self, master):
        self.master = master
        self._per_device_tensors = {}

    def get(self, device):
        return self._per_device_tensors.setdefault(device, self.master)


torch._amp_foreach_non_finite_check_and_unscale_ = non_finite_check_and_unscale_
torch._amp_update_scale_ = update_scale_
grad_scaler_module._MultiDeviceReplicator = CpuReplicator
grad_scaler_module.amp_definitely_not_available = lambda: False


class CpuGradScaler(torch.cuda.amp.GradScaler):
    def scale(self, outputs):  # GradScaler.scale asserts a CUDA tensor; the same product
        if self._scale is None:
            self._lazy_init_scale_growth_tracker(outputs.device)
        return outputs * self._scale


decay = [params[n] for n in names if params[n].dim() >= 2]
no_decay = [params[n] for n in names if params[n].dim() < 2]
if opt_type in ("adamw", "scaler"):
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
else:
    opt = torch.optim.SGD([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=LR * 20, momentum=0.9)
base_lr = [g["lr"] for g in opt.param_groups]


def linear_warmup(step):  # transformers.get_linear_schedule_with_warmup's lr_lambda
    if step < WARMUP:
        return step / max(1, WARMUP)
    return max(0.0, (STEPS - step) / max(1, STEPS - WARMUP))


scaler = CpuGradScaler(init_scale=INIT_SCALE, growth_interval=GROWTH_INTERVAL) if SCALER else None
records = []
scheduler_step = 0
for step in range(STEPS):
    for g, b in zip(opt.param_groups, base_lr):
        g["lr"] = b * linear_warmup(scheduler_step)
    opt.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for m in range(ACCUM):
        first = step * G + m * MICRO
        wins = torch.stack([stream[i * SEQ: i * SEQ + SEQ + 1] for i in range(first, first + MICRO)])
        loss = F.cross_entropy(forward(params, wins[:, :-1]).reshape(-1, V), wins[:, 1:].reshape(-1))
        loss_sum += loss.item()
        if SCALER:
            scaler.scale(loss / ACCUM).backward()
        else:
            (loss / ACCUM).backward()
    record = {"step": step + 1, "loss": loss_sum / ACCUM, "lr": opt.param_groups[0]["lr"]}
    if SCALER:
        if step in OVERFLOW_STEPS:
            with torch.no_grad():
                params[names[0]].grad.view(-1)[0] = float("inf")
        record["loss_scale"] = scaler.get_scale()
        scaler.unscale_(opt)  # as accelerator.clip_grad_norm_
        norm = torch.nn.utils.clip_grad_norm_([params[n] for n in names], CLIP)
        scaler.step(opt)
        scaler.update()
        record["update_skipped"] = scaler.get_scale() < record["loss_scale"]
        if not record["update_skipped"]:
            scheduler_step += 1
    else:
        norm = torch.nn.utils.clip_grad_norm_([params[n] for n in names], CLIP)
        opt.step()
        scheduler_step += 1
    record["grad_norm"] = norm.item() if math.isfinite(norm.item()) else None  # JSON has no inf
    records.append(record)

with open(os.path.join(out_dir, "expected.json"), "w") as f:
    json.dump({"optimizer": opt_type, "lr": LR * 20 if opt_type == "sgd" else LR, "clip": CLIP,
               "weight_decay": WD, "seq_len": SEQ, "micro_batch": MICRO, "accum": ACCUM, "steps": STEPS,
               "warmup": WARMUP, "records": records, "init_scale": INIT_SCALE,
               "growth_interval": GROWTH_INTERVAL,
               "overflow_attempts": [s + 1 for s in OVERFLOW_STEPS] if SCALER else [],
               "final": {"transformer." + n: params[n].detach().reshape(-1).tolist() for n in names}}, f)
print(f"wrote {out_dir}: losses {[round(r['loss'], 5) for r in records]}")
