"""Reference for hfrun's SFT: a tiny Llama fine-tuned on prompt/completion records in PyTorch
float64, with the math of HF's LlamaForCausalLM (llama_reference.py) and CONTRACT.md's sft rule:
ids = encode(prompt, special tokens: BOS) ++ encode(completion) ++ [eos], cut to seq_len + 1;
inputs ids[:-1], targets ids[1:], prompt targets and padding not counted; the step loss is the
summed cross-entropy of every counted target of the global batch over their number. Batches as
CONTRACT.md defines (shuffle off), padded on the right per micro batch; AdamW (decay on ndim >= 2
only), clipping, gradient accumulation; then the validation loss over every counted target.

    /usr/bin/python3 sft_train_reference.py OUT_DIR records
    node encode_records.js OUT_DIR TOKENIZER_JSON SEQ_LEN sft
    /usr/bin/python3 sft_train_reference.py OUT_DIR train
"""
import json
import os
import random
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models",
                                "reference"))
import llama_reference as llama  # noqa: E402
from bert_cls_train_reference import save_safetensors  # noqa: E402

out_dir, what = sys.argv[1], sys.argv[2]
SEQ, MICRO, ACCUM, STEPS = 20, 3, 2, 5
LR, CLIP, WD = 3e-3, 1.0, 0.1
BETAS, EPS = (0.9, 0.95), 1e-8
WORDS = ("what is the capital of france paris is the capital name a color blue red green sky is "
         "answer question tell me about cats dogs they are animals").split()


def write_records():
    rng = random.Random(5)

    def text(n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    os.makedirs(out_dir, exist_ok=True)
    for name, n in (("train", 16), ("val", 7)):
        with open(os.path.join(out_dir, f"{name}.jsonl"), "w") as f:
            for i in range(n):
                prompt = "Question: " + text(rng.randint(2, 8)) + "?\nAnswer:"
                if i == 4:
                    prompt = "Question: " + text(30) + "?\nAnswer:"  # longer than seq_len
                f.write(json.dumps({"prompt": prompt, "completion": " " + text(rng.randint(1, 9))}) + "\n")


def example(r):
    ids = r["prompt_ids"] + r["completion_ids"] + [r["eos"]]
    ids = ids[:SEQ + 1]
    inputs, targets = ids[:-1], ids[1:]
    targets = [-100 if i + 1 < len(r["prompt_ids"]) else t for i, t in enumerate(targets)]
    return inputs, targets


def batch_of(rows):
    ex = [example(r) for r in rows]
    t = max(len(i) for i, _ in ex)
    ids = torch.zeros((len(ex), t), dtype=torch.long)
    tg = torch.full((len(ex), t), -100, dtype=torch.long)
    for k, (i, g) in enumerate(ex):
        ids[k, :len(i)] = torch.tensor(i)
        tg[k, :len(g)] = torch.tensor(g)
    return ids, tg


def summed_ce(c, p, rows):
    ids, tg = batch_of(rows)
    logits = llama.forward(c, p, ids)
    counted = int((tg != -100).sum())
    if counted == 0:
        return logits.sum() * 0, 0
    return F.cross_entropy(logits.view(-1, logits.size(-1)), tg.view(-1), ignore_index=-100,
                           reduction="sum"), counted


def train():
    enc = json.load(open(os.path.join(out_dir, "encoded.json")))
    train_rows, val_rows = enc["train"], enc["val"]
    c = dict(model_type="llama", vocab_size=enc["vocab_size"], hidden_size=32,
             intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
             rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(31)
    p = llama.make_params(c)
    os.makedirs(os.path.join(out_dir, "model"), exist_ok=True)
    json.dump(c, open(os.path.join(out_dir, "model", "config.json"), "w"))
    save_safetensors(os.path.join(out_dir, "model", "model.safetensors"), p)
    decay = [t for t in p.values() if t.dim() >= 2]
    no_decay = [t for t in p.values() if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    G = MICRO * ACCUM
    steps = []
    for s in range(STEPS):
        opt.zero_grad()
        parts = []
        for m in range(ACCUM):
            first = s * G + m * MICRO
            parts.append(summed_ce(c, p, [train_rows[k % len(train_rows)]
                                          for k in range(first, first + MICRO)]))
        n = sum(k for _, k in parts)
        loss = sum(l for l, _ in parts) / max(n, 1)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(p.values()), CLIP)
        opt.step()
        steps.append({"loss": loss.item(), "grad_norm": norm.item(), "counted": n})
    with torch.no_grad():
        total, n = 0.0, 0
        for i in range(0, len(val_rows), MICRO):
            l, k = summed_ce(c, p, val_rows[i:i + MICRO])
            total += l.item()
            n += k
    expected = {"seq_len": SEQ, "micro_batch": MICRO, "accum": ACCUM, "steps": STEPS, "lr": LR,
                "clip": CLIP, "weight_decay": WD, "train_steps": steps,
                "eval": {"val_loss": total / n},
                "final_params": {k: t.detach().reshape(-1).tolist() for k, t in p.items()}}
    json.dump(expected, open(os.path.join(out_dir, "expected.json"), "w"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_records() if what == "records" else train()
