#!/usr/bin/env python3
"""Random-kill soak: SIGKILL a training run at many seeded moments and restart it each time.

For each layout (1 process; 2 ranks DDP; 2 ranks ZeRO-1, whose ranks share one copy of the
parameters in node memory and restore it from the first rank alone; 2 ranks ZeRO-3) a tiny GPT-2
first trains uninterrupted with HFRUN_FAULT_TRACE, which lists every fault point each rank passes
(each optimizer step, each chunk of each checkpoint and export file, each file's rename, the
checkpoint's manifest, commit and pruning; common/fault.h). Then the same run is started again and
again in a fresh output_dir, each time with HFRUN_FAULT_KILL="RANK:N": the chosen rank SIGKILLs
itself at its N-th point, picked by a seeded RNG among the points the resumed process will pass (a
resumed process passes the uninterrupted run's points from its resume step on), about half of them
inside checkpoint writes. After KILLS kills the run is left to finish. Checked:
  - every kill happened (the run or the launcher reports SIGKILL) and no other error occurred;
  - after each kill, every directory that looks committed (checkpoints/step-N) is complete (its
    manifest lists files that exist with their sizes), and the next start resumes from the newest
    one: auto-resume never picks a partial checkpoint and never loses a committed one;
  - the finished run's per-step losses in metrics.jsonl are the uninterrupted run's, to the last
    digit, and final/model.safetensors is the same bytes.
Usage: kill_soak.py HFRUN GPT2_TOKENIZER_JSON [KILLS] [SEED]
"""
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

HFRUN, GPT2 = sys.argv[1], sys.argv[2]
KILLS = int(sys.argv[3]) if len(sys.argv) > 3 else 20
SEED = int(sys.argv[4]) if len(sys.argv) > 4 else 1
MAX_STEPS, EVERY = 40, 2
LAYOUTS = [("np1", 1, 0), ("np2_ddp", 2, 0), ("np2_zero1", 2, 1), ("np2_zero3", 2, 3)]
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def config(tmp, out, np, zero):
    corpus = os.path.join(tmp, "corpus.txt")
    if not os.path.exists(corpus):
        with open(corpus, "w") as f:
            for i in range(1, 101):
                f.write(f"Line {i}: {i * 7 % 11} birds sing over the river.\n")
    path = out + ".yaml"
    with open(path, "w") as f:
        f.write(f"""output_dir: {out}
seed: 3
model: {{config: {{n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32}}}}
tokenizer: {GPT2}
data: {{train: [{corpus}], seq_len: 16}}
optimizer: {{type: adamw, lr: 0.01}}
train: {{micro_batch_size: 1, max_steps: {MAX_STEPS}, log_every: 1}}
checkpoint: {{every: {EVERY}, keep: 2}}
distributed: {{zero_stage: {zero}}}
""")
    return path


def run(cfg, np, env_extra):
    cmd = [HFRUN, "train", cfg] if np == 1 else [HFRUN, "-np", str(np), "--oversubscribe", cfg]
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=300)
    return p.returncode, p.stdout


def train_losses(out):
    """{step: loss text} of the train lines of metrics.jsonl (exact text, no float rounding)."""
    losses = {}
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            m = re.search(r'"step": (\d+), "loss": ([-0-9.eE+]+)', line)
            if m:
                step = int(m.group(1))
                if step in losses:
                    fail(f"{out}/metrics.jsonl: step {step} logged twice")
                losses[step] = m.group(2)
    return losses


def committed(out):
    """Steps of the directories that look committed; fails on any that is incomplete."""
    root = os.path.join(out, "checkpoints")
    steps = []
    if not os.path.isdir(root):
        return steps
    for name in os.listdir(root):
        if not re.fullmatch(r"step-\d{8,}", name):
            continue
        d = os.path.join(root, name)
        manifest = os.path.join(d, "manifest.json")
        if not os.path.exists(manifest):
            fail(f"{d} looks committed but has no manifest.json")
            continue
        with open(manifest) as f:
            m = json.load(f)
        for entry in m["files"]:
            p = os.path.join(d, entry["name"])
            if not os.path.exists(p) or os.path.getsize(p) != entry["size"]:
                fail(f"{d}: {entry['name']} missing or not {entry['size']} bytes")
        steps.append(int(name[5:]))
    return sorted(steps)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def soak(tmp, rng, name, np, zero):
    ref = os.path.join(tmp, name + "_ref")
    rc, log = run(config(tmp, ref, np, zero), np, {"HFRUN_FAULT_TRACE": ref + ".trace"})
    if rc != 0:
        fail(f"{name}: the uninterrupted run failed ({rc}):\n{log}")
        return
    ref_losses = train_losses(ref)
    traces = []
    for r in range(np):
        with open(f"{ref}.trace.{r}") as f:
            traces.append([line.split()[1] for line in f])
    steps_at = [[i for i, w in enumerate(t) if w == "step"] for t in traces]
    if any(len(s) != MAX_STEPS for s in steps_at):
        fail(f"{name}: the trace has {[len(s) for s in steps_at]} step points, not {MAX_STEPS}")
        return
    # A window of about 2 checkpoint intervals of a rank's points from its resume point: every
    # start makes some progress on average, and the run lasts for all the kills.
    windows = [max(4, int(2 * len(t) * EVERY / MAX_STEPS)) for t in traces]
    # The moments around a commit are few but matter most: they get a share of their own.
    critical = ("checkpoint.manifest", "checkpoint.commit", "checkpoint.committed",
                "checkpoint.pruned", "export.written", "export.commit", "file.renamed")

    out = os.path.join(tmp, name)
    cfg = config(tmp, out, np, zero)
    kinds = {}
    resume = 0
    for kill in range(KILLS + 1):
        rank = rng.randrange(np)
        if resume < MAX_STEPS:
            start = steps_at[rank][resume]  # the resumed process's first point: the next step's
        else:  # trained and checkpointed: what is left is the export of final/
            start = 1 + max(i for i, w in enumerate(traces[rank]) if w.startswith("checkpoint."))
        end = min(len(traces[rank]), start + windows[rank])
        env = {}
        if kill < KILLS and end > start:
            candidates = list(range(start, end))
            steps = [i for i in candidates if traces[rank][i] == "step"]
            commits = [i for i in candidates if traces[rank][i] in critical]
            pick = rng.random()
            if steps and pick < 0.35:
                candidates = steps
            elif commits and pick < 0.6:
                candidates = commits
            at = rng.choice(candidates)
            env["HFRUN_FAULT_KILL"] = f"{rank}:{at - start + 1}"
            kinds[traces[rank][at]] = kinds.get(traces[rank][at], 0) + 1
        rc, log = run(cfg, np, env)
        where = f"{name} start {kill + 1} (resuming at step {resume}, {env or 'no kill'})"
        if resume > 0 and f"(step {resume})" not in log and "run already complete" not in log:
            fail(f"{where}: did not resume from step {resume}:\n{log}")
        if not env:
            if rc != 0:
                fail(f"{where}: exit {rc}:\n{log}")
            break
        killed = rc == -9 if np == 1 else bool(re.search(r"signal 9 \(Killed\)", log))
        if not killed or "error" in log.replace("job failed", ""):
            fail(f"{where}: expected a SIGKILL and nothing else, got exit {rc}:\n{log}")
            return
        steps = committed(out)
        resume = steps[-1] if steps else 0
    if len(kinds) == 0 or sum(kinds.values()) < KILLS:
        fail(f"{name}: only {sum(kinds.values())} kills")
    losses = train_losses(out)
    if losses != ref_losses:
        diff = [s for s in sorted(set(losses) | set(ref_losses)) if losses.get(s) != ref_losses.get(s)]
        fail(f"{name}: losses differ from the uninterrupted run at steps {diff[:10]}")
    final, ref_final = (os.path.join(d, "final", "model.safetensors") for d in (out, ref))
    if not os.path.exists(final) or sha(final) != sha(ref_final):
        fail(f"{name}: final/model.safetensors differs from the uninterrupted run's")
    print(f"{name}: {sum(kinds.values())} kills ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
          f"{len(losses)} losses equal the uninterrupted run", flush=True)


def main():
    rng = random.Random(SEED)
    tmp = tempfile.mkdtemp()
    try:
        for name, np, zero in LAYOUTS:
            soak(tmp, rng, name, np, zero)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failures else 0)


main()
