"""Reference for hfrun's sequence-classification training: a tiny BERT fine-tuned on sentence
pairs (MRPC's shape: two sentences, label 1 when the second says the same as the first) in
PyTorch float64, with the math of HF's BertForSequenceClassification (bert_reference.py), the
batches CONTRACT.md defines (shuffle off: step s trains on records [s*G, (s+1)*G) of the epoch
order, each micro batch padded on the right to its longest row), AdamW with decay on ndim >= 2
only, global-norm clipping, gradient accumulation, then the validation loss, accuracy and F1.

    /usr/bin/python3 bert_cls_train_reference.py OUT_DIR records   # writes train/val .jsonl
    node encode_records.js OUT_DIR TOKENIZER_JSON SEQ_LEN            # HF tokenizers' ids
    /usr/bin/python3 bert_cls_train_reference.py OUT_DIR train     # expected.json + model/

The ids come from Hugging Face's tokenizers (the npm binding, encode_records.js), so hfrun's
tokenizer, truncation and batching are checked along with its model and optimizer.
"""
import json
import os
import random
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models",
                                "reference"))
import bert_reference as bert  # noqa: E402

out_dir, what = sys.argv[1], sys.argv[2]
SEQ, MICRO, ACCUM, STEPS = 24, 4, 2, 8
LR, CLIP, WD = 5e-3, 1.0, 0.01
BETAS, EPS = (0.9, 0.999), 1e-8

WORDS = ("the company said its shares rose sharply after the report on monday while analysts "
         "expected a smaller gain in the quarter and the bank cut its forecast for growth this "
         "year as prices fell across markets").split()


def write_records():
    rng = random.Random(77)

    def sentence(n):
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    def records(n):
        out = []
        for i in range(n):
            a = sentence(rng.randint(4, 14))
            same = rng.random() < 0.5
            b = (" ".join(reversed(a[:-1].lower().split())).capitalize() + "." if same
                 else sentence(rng.randint(3, 16)))
            label = "equivalent" if same else "not_equivalent"
            out.append({"sentence1": a, "sentence2": b, "label": label if i % 3 else int(same)})
        return out

    os.makedirs(out_dir, exist_ok=True)
    for name, n in (("train", 28), ("val", 11)):
        with open(os.path.join(out_dir, f"{name}.jsonl"), "w") as f:
            for r in records(n):
                f.write(json.dumps(r) + "\n")


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for n, t in tensors.items():
        data = t.detach().float().contiguous().numpy().tobytes()
        header[n] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def batch_of(rows):
    t = max(len(r["ids"]) for r in rows)
    ids = torch.zeros((len(rows), t), dtype=torch.long)
    types = torch.zeros((len(rows), t), dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["ids"])
        ids[i, :n] = torch.tensor(r["ids"])
        types[i, :n] = torch.tensor(r["type_ids"])
        mask[i, :n] = 1
    labels = torch.tensor([r["label"] for r in rows])
    return dict(ids=ids, types=types, mask=mask, targets=labels)


def train():
    enc = json.load(open(os.path.join(out_dir, "encoded.json")))
    label2id = {"not_equivalent": 0, "equivalent": 1}

    def rows(split):
        out = []
        for r in enc[split]:
            lab = r["label"]
            out.append(dict(r, label=label2id[lab] if isinstance(lab, str) else int(lab)))
        return out

    train_rows, val_rows = rows("train"), rows("val")
    c = dict(bert.BASE, vocab_size=enc["vocab_size"], max_position_embeddings=32,
             hidden_act="gelu", id2label={"0": "not_equivalent", "1": "equivalent"},
             label2id=label2id)
    torch.manual_seed(99)
    p = bert.make_params(c, "sequence_classification")
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
        total = 0.0
        for m in range(ACCUM):
            first = s * G + m * MICRO
            micro = [train_rows[k % len(train_rows)] for k in range(first, first + MICRO)]
            _, loss = bert.loss_of(c, "sequence_classification", p, batch_of(micro))
            (loss / ACCUM).backward()
            total += loss.item() / ACCUM
        norm = torch.nn.utils.clip_grad_norm_(list(p.values()), CLIP)
        opt.step()
        steps.append({"loss": total, "grad_norm": norm.item()})

    with torch.no_grad():
        loss_sum, correct, tp, fp, fn = 0.0, 0, 0, 0, 0
        for i in range(0, len(val_rows), MICRO):
            b = batch_of(val_rows[i:i + MICRO])
            logits, loss = bert.loss_of(c, "sequence_classification", p, b)
            loss_sum += loss.item() * len(b["targets"])
            pred = logits.argmax(-1)
            y = b["targets"]
            correct += int((pred == y).sum())
            tp += int(((pred == 1) & (y == 1)).sum())
            fp += int(((pred == 1) & (y != 1)).sum())
            fn += int(((pred != 1) & (y == 1)).sum())
        n = len(val_rows)
        val = {"val_loss": loss_sum / n, "val_accuracy": correct / n,
               "val_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0}
    expected = {"seq_len": SEQ, "micro_batch": MICRO, "accum": ACCUM, "steps": STEPS, "lr": LR,
                "clip": CLIP, "weight_decay": WD, "train_steps": steps, "eval": val,
                "final_params": {n: t.detach().reshape(-1).tolist() for n, t in p.items()}}
    json.dump(expected, open(os.path.join(out_dir, "expected.json"), "w"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_records() if what == "records" else train()
