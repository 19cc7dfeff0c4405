"""Reference numbers for hfrun's BERT, computed by PyTorch (Debian's python3-torch) in float64
with the math of Hugging Face's BertForMaskedLM / BertForSequenceClassification written out
below (transformers is not needed): word + token-type + absolute position embeddings with
LayerNorm, post-LN encoder layers with bidirectional attention over the unpadded keys (HF's
additive attention_mask), the hidden_act, the pooler (tanh of the first token) and classifier,
and the masked-LM head (transform, LayerNorm, decoder tied to the word embeddings, bias). The
word embedding lookup has padding_idx = pad_token_id, as nn.Embedding in BertEmbeddings.

Rows are padded on the right (pad_token_id, token type 0) to the longest row; each case gives
ids, token types and lengths. For each case: the logits, loss and every parameter gradient; for
the classification cases also a few AdamW steps (decay on ndim >= 2 only, global-norm clipping
at 1.0) with per-step losses and the final weights.

    /usr/bin/python3 bert_reference.py OUT.json
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(8642)
torch.set_num_threads(1)

BASE = dict(model_type="bert", vocab_size=61, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=48, max_position_embeddings=24,
            type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, initializer_range=0.02)

CASES = [
    # Masked LM over three padded rows, exact GELU; a pad id inside the first row (its
    # embedding row gets gradient only through the tied decoder).
    dict(name="bert_mlm_gelu", task="masked_lm", config=dict(BASE, hidden_act="gelu"),
         lengths=[11, 7, 4], pairs=False),
    # Sentence-pair classification, two labels named through id2label, the tanh GELU.
    dict(name="bert_pairs_cls", task="sequence_classification",
         config=dict(BASE, hidden_act="gelu_new", classifier_dropout=None,
                     id2label={"0": "not_equivalent", "1": "equivalent"},
                     label2id={"not_equivalent": 0, "equivalent": 1}),
         lengths=[12, 9, 5, 12], pairs=True),
    # Regression (num_labels 1: mean squared error), three layers, relu.
    dict(name="bert_regression", task="sequence_classification",
         config=dict(BASE, hidden_act="relu", num_hidden_layers=3, num_labels=1),
         lengths=[8, 3, 6], pairs=False),
]
TRAIN_STEPS = 3
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def randn(*shape, std=0.3):
    return (torch.randn(*shape, dtype=torch.float64) * std).float().double()


def num_labels(c):
    return c.get("num_labels", len(c.get("id2label", {"0": 0, "1": 1})))


def make_params(c, task):
    C, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    p = {"bert.embeddings.word_embeddings.weight": randn(V, C),
         "bert.embeddings.position_embeddings.weight": randn(c["max_position_embeddings"], C),
         "bert.embeddings.token_type_embeddings.weight": randn(c["type_vocab_size"], C),
         "bert.embeddings.LayerNorm.weight": 1 + randn(C, std=0.1),
         "bert.embeddings.LayerNorm.bias": randn(C, std=0.1)}
    for i in range(c["num_hidden_layers"]):
        q = f"bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            p[q + f"attention.self.{name}.weight"] = randn(C, C)
            p[q + f"attention.self.{name}.bias"] = randn(C, std=0.1)
        p[q + "attention.output.dense.weight"] = randn(C, C)
        p[q + "attention.output.dense.bias"] = randn(C, std=0.1)
        p[q + "attention.output.LayerNorm.weight"] = 1 + randn(C, std=0.1)
        p[q + "attention.output.LayerNorm.bias"] = randn(C, std=0.1)
        p[q + "intermediate.dense.weight"] = randn(I, C)
        p[q + "intermediate.dense.bias"] = randn(I, std=0.1)
        p[q + "output.dense.weight"] = randn(C, I)
        p[q + "output.dense.bias"] = randn(C, std=0.1)
        p[q + "output.LayerNorm.weight"] = 1 + randn(C, std=0.1)
        p[q + "output.LayerNorm.bias"] = randn(C, std=0.1)
    if task == "masked_lm":
        p["cls.predictions.bias"] = randn(V, std=0.1)
        p["cls.predictions.transform.dense.weight"] = randn(C, C)
        p["cls.predictions.transform.dense.bias"] = randn(C, std=0.1)
        p["cls.predictions.transform.LayerNorm.weight"] = 1 + randn(C, std=0.1)
        p["cls.predictions.transform.LayerNorm.bias"] = randn(C, std=0.1)
    else:
        p["bert.pooler.dense.weight"] = randn(C, C)
        p["bert.pooler.dense.bias"] = randn(C, std=0.1)
        p["classifier.weight"] = randn(num_labels(c), C)
        p["classifier.bias"] = randn(num_labels(c), std=0.1)
    for t in p.values():
        t.requires_grad_(True)
    return p


def act(name, x):
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return F.relu(x)
    return F.silu(x)


def forward(c, task, p, ids, types, mask):
    b, t = ids.shape
    C, H = c["hidden_size"], c["num_attention_heads"]
    D = C // H
    eps = c["layer_norm_eps"]

    def lin(name, z):
        return F.linear(z, p[name + ".weight"], p.get(name + ".bias"))

    def ln(name, z):
        return F.layer_norm(z, (C,), p[name + ".weight"], p[name + ".bias"], eps)

    e = "bert.embeddings."
    x = F.embedding(ids, p[e + "word_embeddings.weight"], padding_idx=c["pad_token_id"])
    x = x + F.embedding(types, p[e + "token_type_embeddings.weight"])
    x = x + p[e + "position_embeddings.weight"][:t]
    x = ln(e + "LayerNorm", x)
    # get_extended_attention_mask: (1 - mask) * finfo.min added to the scores.
    ext = (1.0 - mask[:, None, None, :].double()) * torch.finfo(torch.float64).min
    for i in range(c["num_hidden_layers"]):
        q_ = f"bert.encoder.layer.{i}."

        def heads(z):
            return z.view(b, t, H, D).transpose(1, 2)

        q = heads(lin(q_ + "attention.self.query", x))
        k = heads(lin(q_ + "attention.self.key", x))
        v = heads(lin(q_ + "attention.self.value", x))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + ext, dim=-1)
        y = (w @ v).transpose(1, 2).reshape(b, t, C)
        a = ln(q_ + "attention.output.LayerNorm", lin(q_ + "attention.output.dense", y) + x)
        h = act(c["hidden_act"], lin(q_ + "intermediate.dense", a))
        x = ln(q_ + "output.LayerNorm", lin(q_ + "output.dense", h) + a)
    if task == "masked_lm":
        h = act(c["hidden_act"], lin("cls.predictions.transform.dense", x))
        h = ln("cls.predictions.transform.LayerNorm", h)
        return h @ p[e + "word_embeddings.weight"].t() + p["cls.predictions.bias"]
    pooled = torch.tanh(lin("bert.pooler.dense", x[:, 0]))
    return lin("classifier", pooled)


def loss_of(c, task, p, batch):
    logits = forward(c, task, p, batch["ids"], batch["types"], batch["mask"])
    if task == "masked_lm":
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)),
                                       batch["targets"].view(-1), ignore_index=-100)
    if num_labels(c) == 1:
        return logits, F.mse_loss(logits.squeeze(), batch["targets"].squeeze())
    return logits, F.cross_entropy(logits.view(-1, num_labels(c)), batch["targets"].view(-1))


def make_batch(c, task, lengths, pairs):
    V, pad = c["vocab_size"], c["pad_token_id"]
    b, t = len(lengths), max(lengths)
    ids = torch.full((b, t), pad, dtype=torch.long)
    types = torch.zeros((b, t), dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(1, V, (n,))
        mask[r, :n] = 1
        if pairs and n > 3:
            types[r, n // 2:n] = 1  # the second sentence
    if task == "masked_lm":
        ids[0, 3] = pad  # a pad id that is a token
        targets = torch.full((b, t), -100, dtype=torch.long)
        for r, n in enumerate(lengths):
            for j in range(n):
                if torch.rand(()) < 0.4:
                    targets[r, j] = int(torch.randint(0, V, ()))
    elif num_labels(c) == 1:
        targets = torch.randn(b, dtype=torch.float64).float().double()
    else:
        targets = torch.randint(0, num_labels(c), (b,))
    return dict(ids=ids, types=types, mask=mask, targets=targets, lengths=lengths)


def batch_json(batch):
    return {"ids": batch["ids"].tolist(), "type_ids": batch["types"].tolist(),
            "lengths": batch["lengths"], "targets": batch["targets"].tolist()}


def flat(t):
    return t.detach().reshape(-1).tolist()


def run_case(case):
    c, task = case["config"], case["task"]
    p = make_params(c, task)
    out = {"name": case["name"], "task": task, "config": c,
           "params": {n: {"shape": list(t.shape), "data": flat(t)} for n, t in p.items()}}
    batch = make_batch(c, task, case["lengths"], case["pairs"])
    logits, loss = loss_of(c, task, p, batch)
    loss.backward()
    out.update(batch=batch_json(batch), logits=flat(logits), loss=loss.item(),
               grads={n: flat(t.grad) for n, t in p.items()})
    if task == "masked_lm":
        return out
    for t in p.values():
        t.grad = None
    decay = [t for t in p.values() if t.dim() >= 2]
    no_decay = [t for t in p.values() if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"])
    steps = []
    for s in range(TRAIN_STEPS):
        lengths = [max(2, n - s) for n in case["lengths"]]
        sb = make_batch(c, task, lengths, case["pairs"])
        opt.zero_grad()
        _, l = loss_of(c, task, p, sb)
        l.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(p.values()), 1.0)
        opt.step()
        steps.append(batch_json(sb) | {"loss": l.item(), "grad_norm": norm.item()})
    out["adamw"] = ADAMW | {"betas": list(ADAMW["betas"]), "max_norm": 1.0}
    out["train_steps"] = steps
    out["final_params"] = {n: flat(t) for n, t in p.items()}
    return out


def main():
    results = [run_case(case) for case in CASES]
    with open(sys.argv[1], "w") as f:
        json.dump({"cases": results}, f)


if __name__ == "__main__":
    main()
