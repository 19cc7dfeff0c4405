#!/usr/bin/env python3
"""Trains small SentencePiece Unigram models (Debian's python3-sentencepiece) on Brown-corpus
text with SentencePiece's own nmt_nfkc normalization, and writes each as a Hugging Face
tokenizer.json the way transformers' converters do for T5/ALBERT-style models: a Precompiled
normalizer holding the model's real precompiled_charsmap, Metaspace pre-tokenizer and decoder,
a Unigram model with the trained scores, and an EOS template.

    make_sentencepiece.py TEXT.txt OUT_DIR

Writes OUT_DIR/spm_unigram.tokenizer.json and OUT_DIR/spm_unigram_bytes.tokenizer.json (the
second trained with byte_fallback)."""
import base64
import json
import os
import sys
import tempfile

import sentencepiece as spm


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def fields(buf):
    """(field number, wire type, value) of a serialized protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def precompiled_charsmap(model_bytes):
    # ModelProto.normalizer_spec (3) -> NormalizerSpec.precompiled_charsmap (2)
    for number, _, value in fields(model_bytes):
        if number == 3:
            for n2, _, v2 in fields(value):
                if n2 == 2:
                    return bytes(v2)
    raise ValueError("no precompiled_charsmap in the model")


def tokenizer_json(model_path, byte_fallback):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    with open(model_path, "rb") as f:
        charsmap = precompiled_charsmap(f.read())
    vocab = [[sp.id_to_piece(i), sp.get_score(i)] for i in range(sp.get_piece_size())]
    specials = [i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    metaspace = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                 "split": True}
    eos = sp.piece_to_id("</s>")
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": sp.id_to_piece(i), "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                         for i in specials],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "</s>", "type_id": 1}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [eos], "tokens": ["</s>"]}}},
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": sp.unk_id(), "vocab": vocab,
                  "byte_fallback": byte_fallback},
    }


def main():
    text, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, byte_fallback in (("spm_unigram", False), ("spm_unigram_bytes", True)):
            prefix = os.path.join(tmp, name)
            spm.SentencePieceTrainer.train(
                input=text, model_prefix=prefix, model_type="unigram", vocab_size=1500,
                normalization_rule_name="nmt_nfkc", character_coverage=0.9995,
                byte_fallback=byte_fallback, num_threads=2, shuffle_input_sentence=False,
                max_sentence_length=100000, minloglevel=2)
            with open(os.path.join(out_dir, f"{name}.tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(tokenizer_json(prefix + ".model", byte_fallback), f, ensure_ascii=False)
    print(f"wrote spm_unigram and spm_unigram_bytes tokenizers to {out_dir}")


if __name__ == "__main__":
    main()
