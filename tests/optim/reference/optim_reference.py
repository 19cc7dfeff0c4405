"""Reference optimizer trajectories from PyTorch for tests/optim/parity/test_optim_parity.cpp.

Run by Debian's /usr/bin/python3 (python3-torch). Writes one JSON file holding the inputs
(initial parameters and a gradient per parameter per step, drawn here from a seeded torch
Generator so the C++ side reads bit-identical float32 values) and, for each case, the expected
lr, gradient norm, parameters and optimizer state after every step of:

    lr = base_lr * multiplier(step)          # HF transformers' schedule, set before the step
    p.grad = grads[step]                     # None for a skipped parameter: torch skips it
    norm = clip_grad_norm_(params, max_norm)
    optimizer.step()

with torch.optim.AdamW / torch.optim.SGD (foreach=False, the single-tensor code path) and two
param groups split as hfrun does it: weight decay for ndim >= 2 only.

Usage: optim_reference.py OUT.json
"""
import json
import math
import os
import sys

try:
    import torch
except ImportError as e:  # the ctest fixture must fail loudly, never skip
    sys.exit(f"optim_reference.py: cannot import torch ({e}); install Debian's python3-torch "
             f"(scripts/install-deps.sh) and run this with /usr/bin/python3")

STEPS = 5
WARMUP = 2
# name -> shape; ndim >= 2 decays. Includes a rank-3 and a rank-0 parameter.
SHAPES = [("w1", [8, 16]), ("b1", [16]), ("w2", [4, 3, 5]), ("ln", [16]), ("s", [])]
SKIP = ("b1", 2)  # (parameter, step) whose gradient is None at that step


# HF transformers optimization.py, the lr_lambda(current_step) of
# get_constant_schedule_with_warmup / get_linear_schedule_with_warmup /
# get_cosine_schedule_with_warmup (transformers is not installed; same formulas):
#   step < warmup: step / max(1, warmup)
#   constant: 1.0
#   linear:   max(0, (total - step) / max(1, total - warmup))
#   cosine:   progress = (step - warmup) / max(1, total - warmup)
#             max(0, 0.5 * (1 + cos(pi * num_cycles * 2 * progress)))
def lr_multiplier(kind, step, warmup, total, num_cycles=0.5):
    if step < warmup:
        return float(step) / float(max(1.0, warmup))
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    if kind == "cosine":
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    raise ValueError(kind)


def make_inputs():
    gen = torch.Generator().manual_seed(20240521)
    params = {n: torch.randn(s, generator=gen) * 0.5 for n, s in SHAPES}
    grads = [{n: torch.randn(s, generator=gen) for n, s in SHAPES} for _ in range(STEPS)]
    return params, grads


def to_list(t):
    return t.detach().double().reshape(-1).tolist()  # float32 values, exact in JSON doubles


def run_case(case, init, grads):
    params = {n: init[n].clone().requires_grad_(True) for n, _ in SHAPES}
    decay = [params[n] for n, _ in SHAPES if params[n].dim() >= 2]
    no_decay = [params[n] for n, _ in SHAPES if params[n].dim() < 2]
    wd = case["weight_decay"]
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if case["optimizer"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=case["lr"], betas=tuple(case["betas"]),
                                eps=case["eps"], foreach=False)
        state_names = ["exp_avg", "exp_avg_sq"]
    else:
        opt = torch.optim.SGD(groups, lr=case["lr"], momentum=case["momentum"],
                              dampening=case["dampening"], nesterov=case["nesterov"],
                              foreach=False)
        state_names = ["momentum_buffer"] if case["momentum"] != 0 else []
    steps = []
    for s in range(STEPS):
        lr = case["lr"] * lr_multiplier(case["schedule"], s, WARMUP, STEPS)
        for g in opt.param_groups:
            g["lr"] = lr
        for n, _ in SHAPES:
            skipped = (n, s) == SKIP
            params[n].grad = None if skipped else grads[s][n].clone()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), case["max_norm"])
        opt.step()
        record = {"lr": lr, "grad_norm": float(norm), "params": {}, "state": {}}
        for n, _ in SHAPES:
            p = params[n]
            record["params"][n] = to_list(p)
            st = opt.state.get(p, {})
            for k in state_names:
                if k in st and st[k] is not None:
                    record["state"][f"{k}.{n}"] = to_list(st[k])
            if "step" in st:
                record["state"][f"step.{n}"] = float(st["step"])
        steps.append(record)
    return {**case, "steps": steps}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: optim_reference.py OUT.json")
    torch.set_num_threads(1)
    init, grads = make_inputs()
    adamw = {"optimizer": "adamw", "lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8,
             "weight_decay": 0.1, "max_norm": 1.0}
    sgd = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.0,
           "nesterov": False, "weight_decay": 0.01, "max_norm": 1.0}
    cases = []
    for sched in ["constant", "linear", "cosine"]:
        cases.append({**adamw, "name": f"adamw_{sched}", "schedule": sched})
        cases.append({**sgd, "name": f"sgd_momentum_{sched}", "schedule": sched})
        cases.append({**sgd, "name": f"sgd_nesterov_{sched}", "schedule": sched,
                      "nesterov": True})
    # Unclipped (max_norm above the norm), dampened momentum, plain SGD, default AdamW betas.
    cases.append({**adamw, "name": "adamw_unclipped", "schedule": "linear", "max_norm": 1e3,
                  "betas": [0.9, 0.999], "weight_decay": 0.01})
    cases.append({**sgd, "name": "sgd_dampening", "schedule": "cosine", "dampening": 0.1})
    cases.append({**sgd, "name": "sgd_plain", "schedule": "constant", "momentum": 0.0})
    out = {
        "torch_version": torch.__version__,
        "steps": STEPS,
        "warmup_steps": WARMUP,
        "shapes": {n: s for n, s in SHAPES},
        "order": [n for n, _ in SHAPES],
        "skip": {"param": SKIP[0], "step": SKIP[1]},
        "init": {n: to_list(init[n]) for n, _ in SHAPES},
        "grads": [{n: to_list(g[n]) for n, _ in SHAPES} for g in grads],
        "cases": [run_case(c, init, grads) for c in cases],
    }
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[1])), exist_ok=True)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
    print(f"optim_reference.py: {len(cases)} cases, torch {torch.__version__} -> {sys.argv[1]}")


if __name__ == "__main__":
    main()
