"""Reference numbers for hfrun's Llama family, computed by PyTorch (Debian's python3-torch) in
float64 with the math of Hugging Face's LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM
written out below (transformers is not needed): RMSNorm, rotate-half RoPE with rope_theta and
rope_scaling (llama3), grouped-query attention (repeat_kv), SwiGLU MLP, Qwen2's q/k/v biases,
Qwen3's per-head q_norm/k_norm and explicit head_dim, tied or untied lm_head, Mistral's and
Qwen2's sliding windows (per layer, as masking_utils masks them).

For each case: logits, loss and every parameter gradient of a tiny random model; a few AdamW
steps (torch.optim.AdamW, decay on ndim >= 2 only, global-norm clipping at 1.0) with per-step
losses and the final weights; and the greedy continuation of a prompt (argmax of the full
forward, token by token).

    /usr/bin/python3 llama_reference.py OUT.json
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(4321)
torch.set_num_threads(1)

CASES = [
    # GQA (4 query heads over 2 KV heads), untied lm_head, Llama 3.1 rope scaling that changes
    # the frequencies at these positions (wavelengths between 4 and 16 are smoothed, longer
    # ones slowed 8x).
    dict(name="llama_gqa_untied_llama3rope",
         config=dict(model_type="llama", vocab_size=67, hidden_size=32, intermediate_size=48,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     max_position_embeddings=32, rms_norm_eps=1e-5, rope_theta=10000.0,
                     rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                       high_freq_factor=4.0,
                                       original_max_position_embeddings=16),
                     tie_word_embeddings=False)),
    # Qwen3: q_norm/k_norm, head_dim 10 != hidden / heads (24 / 4), tied embeddings.
    dict(name="qwen3_qknorm_headdim_tied",
         config=dict(model_type="qwen3", vocab_size=53, hidden_size=24, intermediate_size=40,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=10, max_position_embeddings=32, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, tie_word_embeddings=True)),
    # Qwen2: biases on q, k, v (not o), no GQA, untied.
    dict(name="qwen2_bias",
         config=dict(model_type="qwen2", vocab_size=59, hidden_size=24, intermediate_size=36,
                     num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=3,
                     max_position_embeddings=32, rms_norm_eps=1e-6, rope_theta=10000.0,
                     tie_word_embeddings=False)),
    # Mistral: a sliding window of 4 keys in every layer, shorter than the 9 positions trained
    # and the 10 generated.
    dict(name="mistral_sliding_window",
         config=dict(model_type="mistral", vocab_size=61, hidden_size=32, intermediate_size=40,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                     sliding_window=4, tie_word_embeddings=False)),
    # YaRN on a Qwen3: head_dim 8 (4 frequencies), the original context 8 positions, factor 4:
    # the fastest frequency kept, the others interpolated (the ramp), cos and sin scaled by
    # 0.1 ln 4 + 1.
    dict(name="qwen3_yarn",
         config=dict(model_type="qwen3", vocab_size=53, hidden_size=32, intermediate_size=40,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=8, max_position_embeddings=32, rms_norm_eps=1e-6,
                     rope_theta=10000.0, tie_word_embeddings=True,
                     rope_scaling=dict(rope_type="yarn", factor=4.0,
                                       original_max_position_embeddings=8))),
    # Qwen2 with use_sliding_window: full attention below max_window_layers, a window of 3 from
    # layer 1 on.
    dict(name="qwen2_sliding_layers",
         config=dict(model_type="qwen2", vocab_size=59, hidden_size=24, intermediate_size=36,
                     num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
                     max_position_embeddings=32, rms_norm_eps=1e-6, rope_theta=10000.0,
                     use_sliding_window=True, sliding_window=3, max_window_layers=1,
                     tie_word_embeddings=True)),
]
B, T = 2, 9
TRAIN_STEPS = 3
ADAMW = dict(lr=2e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
GEN_PROMPT, GEN_NEW = [3, 14, 15, 9], 6


def randn(*shape, std=0.3):
    return (torch.randn(*shape, dtype=torch.float64) * std).float().double()


def dims(c):
    H = c["num_attention_heads"]
    Hkv = c.get("num_key_value_heads", H)
    D = c.get("head_dim", c["hidden_size"] // H)
    return H, Hkv, D


def make_params(c):
    C, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    H, Hkv, D = dims(c)
    qkv_bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
    p = {"model.embed_tokens.weight": randn(V, C)}
    for i in range(c["num_hidden_layers"]):
        q = f"model.layers.{i}."
        p[q + "self_attn.q_proj.weight"] = randn(H * D, C)
        if qkv_bias:
            p[q + "self_attn.q_proj.bias"] = randn(H * D, std=0.1)
        p[q + "self_attn.k_proj.weight"] = randn(Hkv * D, C)
        if qkv_bias:
            p[q + "self_attn.k_proj.bias"] = randn(Hkv * D, std=0.1)
        p[q + "self_attn.v_proj.weight"] = randn(Hkv * D, C)
        if qkv_bias:
            p[q + "self_attn.v_proj.bias"] = randn(Hkv * D, std=0.1)
        p[q + "self_attn.o_proj.weight"] = randn(C, H * D)
        if c["model_type"] == "qwen3":
            p[q + "self_attn.q_norm.weight"] = 1 + randn(D, std=0.1)
            p[q + "self_attn.k_norm.weight"] = 1 + randn(D, std=0.1)
        p[q + "mlp.gate_proj.weight"] = randn(I, C)
        p[q + "mlp.up_proj.weight"] = randn(I, C)
        p[q + "mlp.down_proj.weight"] = randn(C, I)
        p[q + "input_layernorm.weight"] = 1 + randn(C, std=0.1)
        p[q + "post_attention_layernorm.weight"] = 1 + randn(C, std=0.1)
    p["model.norm.weight"] = 1 + randn(C, std=0.1)
    if not c["tie_word_embeddings"]:
        p["lm_head.weight"] = randn(V, C)
    for t in p.values():
        t.requires_grad_(True)
    return p


def inv_freq(c):
    _, _, D = dims(c)
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    rs = c.get("rope_scaling")
    if rs and rs["rope_type"] == "llama3":  # transformers' _compute_llama3_parameters
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    elif rs and rs["rope_type"] == "yarn":  # transformers' _compute_yarn_parameters
        factor, base = rs["factor"], c["rope_theta"]
        orig = rs.get("original_max_position_embeddings") or c["max_position_embeddings"]

        def correction_dim(rot):
            return (D * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

        low = math.floor(correction_dim(rs.get("beta_fast") or 32))
        high = math.ceil(correction_dim(rs.get("beta_slow") or 1))
        low, high = max(low, 0), min(high, D - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(D // 2, dtype=torch.float64) - low) / (high - low), 0, 1)
        keep = 1 - ramp
        inv = (inv / factor) * (1 - keep) + inv * keep
    return inv


def rope_attention_factor(c):
    rs = c.get("rope_scaling")
    if not rs or rs["rope_type"] != "yarn":
        return 1.0
    return 0.1 * math.log(rs["factor"]) + 1.0 if rs["factor"] > 1 else 1.0


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def layer_window(c, i):
    """The keys a query of layer i sees at most, as transformers' configs decide (0: all)."""
    if c["model_type"] == "mistral":
        return c.get("sliding_window", 4096) or 0
    if c["model_type"] in ("qwen2", "qwen3") and c.get("use_sliding_window", False):
        types = c.get("layer_types")
        sliding = types[i] == "sliding_attention" if types else i >= c.get("max_window_layers", 28)
        return (c.get("sliding_window", 4096) or 0) if sliding else 0
    return 0


def forward(c, p, ids, hidden=False):
    b, t = ids.shape
    H, Hkv, D = dims(c)
    eps = c["rms_norm_eps"]
    freqs = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq(c))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos() * rope_attention_factor(c), emb.sin() * rope_attention_factor(c)
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    x = F.embedding(ids, p["model.embed_tokens.weight"])
    for i in range(c["num_hidden_layers"]):
        q_ = f"model.layers.{i}."
        h = rms_norm(x, p[q_ + "input_layernorm.weight"], eps)

        def proj(name, z):
            return F.linear(z, p[q_ + name + ".weight"], p.get(q_ + name + ".bias"))

        q = proj("self_attn.q_proj", h).view(b, t, H, D)
        k = proj("self_attn.k_proj", h).view(b, t, Hkv, D)
        v = proj("self_attn.v_proj", h).view(b, t, Hkv, D).transpose(1, 2)
        if c["model_type"] == "qwen3":
            q = rms_norm(q, p[q_ + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, p[q_ + "self_attn.k_norm.weight"], eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)  # HF's repeat_kv
        v = v.repeat_interleave(H // Hkv, dim=1)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
        m = mask
        if layer_window(c, i):  # masking_utils' sliding_window_overlay: kv > q - window
            pos = torch.arange(t)
            m = mask & (pos[None, :] > pos[:, None] - layer_window(c, i))
        w = torch.softmax(w.masked_fill(~m, float("-inf")), dim=-1)
        y = torch.matmul(w, v).transpose(1, 2).reshape(b, t, H * D)
        x = x + proj("self_attn.o_proj", y)
        h = rms_norm(x, p[q_ + "post_attention_layernorm.weight"], eps)
        x = x + proj("mlp.down_proj", F.silu(proj("mlp.gate_proj", h)) * proj("mlp.up_proj", h))
    x = rms_norm(x, p["model.norm.weight"], eps)
    if hidden:
        return x
    head = p["model.embed_tokens.weight"] if c["tie_word_embeddings"] else p["lm_head.weight"]
    return x @ head.t()


def loss_of(c, p, ids, targets):
    logits = forward(c, p, ids)
    return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                   ignore_index=-100)


def flat(t):
    return t.detach().reshape(-1).tolist()


def run_case(case):
    c = case["config"]
    V = c["vocab_size"]
    p = make_params(c)
    out = {"name": case["name"], "config": c,
           "params": {n: {"shape": list(t.shape), "data": flat(t)} for n, t in p.items()}}
    ids = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))
    targets[1, 2] = -100  # an ignored target
    logits, loss = loss_of(c, p, ids, targets)
    loss.backward()
    out.update(ids=ids.tolist(), targets=targets.tolist(), logits=flat(logits), loss=loss.item(),
               grads={n: flat(t.grad) for n, t in p.items()})

    # Training: fresh batches each step, AdamW with decay on matrices only, clipping at 1.0.
    for t in p.values():
        t.grad = None
    decay = [t for t in p.values() if t.dim() >= 2]
    no_decay = [t for t in p.values() if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"])
    steps = []
    for _ in range(TRAIN_STEPS):
        sid = torch.randint(0, V, (B, T))
        stg = torch.randint(0, V, (B, T))
        opt.zero_grad()
        _, l = loss_of(c, p, sid, stg)
        l.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(p.values()), 1.0)
        opt.step()
        steps.append({"ids": sid.tolist(), "targets": stg.tolist(), "loss": l.item(),
                      "grad_norm": norm.item()})
    out["adamw"] = ADAMW | {"betas": list(ADAMW["betas"]), "max_norm": 1.0}
    out["train_steps"] = steps
    out["final_params"] = {n: flat(t) for n, t in p.items()}

    # Greedy generation from the trained weights.
    with torch.no_grad():
        seq = list(GEN_PROMPT)
        for _ in range(GEN_NEW):
            seq.append(int(forward(c, p, torch.tensor([seq]))[0, -1].argmax()))
    out["generate"] = {"prompt": GEN_PROMPT, "ids": seq}
    return out


# Qwen2ForSequenceClassification: the score head (no bias) on each row's last token before its
# right padding, three labels, cross-entropy.
CLS_CASE = dict(name="qwen2_sequence_classification",
                config=dict(model_type="qwen2", vocab_size=59, hidden_size=24, intermediate_size=36,
                            num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
                            max_position_embeddings=32, rms_norm_eps=1e-6, rope_theta=10000.0,
                            tie_word_embeddings=False, num_labels=3))


def run_classification(case):
    c = case["config"]
    p = make_params(dict(c, tie_word_embeddings=True))  # no lm_head
    p["score.weight"] = randn(c["num_labels"], c["hidden_size"]).requires_grad_(True)
    lengths = [7, 3, 5]
    ids = torch.zeros((3, max(lengths)), dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(1, c["vocab_size"], (n,))
    labels = torch.tensor([2, 0, 1])
    h = forward(c, p, ids, hidden=True)
    last = h[torch.arange(3), torch.tensor(lengths) - 1]
    logits = last @ p["score.weight"].t()
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return {"name": case["name"], "config": c, "ids": ids.tolist(), "lengths": lengths,
            "labels": labels.tolist(), "logits": flat(logits), "loss": loss.item(),
            "params": {n: {"shape": list(t.shape), "data": flat(t)} for n, t in p.items()},
            "grads": {n: flat(t.grad) for n, t in p.items()}}


def main():
    results = [run_case(case) for case in CASES]
    with open(sys.argv[1], "w") as f:
        json.dump({"cases": results, "classification": run_classification(CLS_CASE)}, f)


if __name__ == "__main__":
    main()
