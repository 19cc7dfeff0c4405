"""The timed training loop the PyTorch baselines share (torch_train_gpt2.py, torch_train_llama.py):
forward under autocast (bf16 when asked), backward, global-norm clipping at 1.0, the optimizer
step; the median step time after warm-up, printed as one JSON line like `hfrun bench train`'s.
"""
import json
import resource
import time

import torch


def run(forward, params, opt, a, vocab):
    """Trains `forward(ids, targets) -> loss` over fixed random batches; a: the parsed args
    (batch, seq, steps, warmup, bf16, device, compile)."""
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    model = torch.compile(forward) if a.compile else forward
    ids = torch.randint(0, vocab, (a.batch, a.seq)).to(dev)
    targets = torch.randint(0, vocab, (a.batch, a.seq)).to(dev)
    times = []
    for step in range(a.warmup + a.steps):
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = model(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(dev)
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    tokens = a.batch * a.seq
    impl = "pytorch " + torch.__version__ + (" compile" if a.compile else "")
    out = {"bench": "train", "impl": impl, "device": str(dev), "dtype": "bf16" if a.bf16 else "f32",
           "params": sum(p.numel() for p in params), "tokens_per_step": tokens,
           "step_s": round(step_s, 4), "tokens_per_s": round(tokens / step_s, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if cuda:
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    print(json.dumps(out))
