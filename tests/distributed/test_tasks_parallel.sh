#!/usr/bin/env bash
# The fine-tuning tasks end to end through the hfrun executable, 1 process against 2 ranks with
# the same global batch: BERT sentence-pair classification (DDP), Llama SFT (ZeRO-3, whose
# ranks must keep their gathers matched when a validation batch is empty; and tensor
# parallelism) and BERT masked LM (ZeRO-1) log the same per-step losses and the same val_loss / val_accuracy / val_f1; final/
# holds the task's transformers class. Also: a label that is not in label2id, and a record
# without its completion field, exit 2 naming the record's file:line.
# Usage: test_tasks_parallel.sh PATH/TO/hfrun BERT_TOKENIZER_JSON GPT2_TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$1"
BERT="$2"
GPT2="$3"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

words=(the boat river apples market bird sings over green hills quietly carries seven red)
for i in $(seq 40); do
  a="${words[$((i % 14))]} ${words[$((i * 3 % 14))]} ${words[$((i * 5 % 14))]} ${words[$((i * 7 % 13))]}"
  b="${words[$((i * 11 % 14))]} ${words[$((i % 5))]} ${words[$((i * 2 % 14))]}"
  label=$([ $((i % 3)) -eq 0 ] && echo pos || echo neg)
  printf '{"s1": "%s", "s2": "%s", "label": "%s", "prompt": "Q: %s?", "completion": " %s"}\n' \
    "$a" "$b" "$label" "$a" "$b"
done > "$TMP/records.jsonl"
head -n 9 "$TMP/records.jsonl" > "$TMP/val.jsonl"

bert_model='{hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 40, hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}'
task_yaml() {  # task_yaml TASK OUTPUT_DIR MICRO_BATCH ZERO_STAGE [TENSOR_PARALLEL]
  case "$1" in
    sequence_classification)
      model="{arch: bert, config: ${bert_model%\}}, id2label: {'0': neg, '1': pos}}}"
      tok="$BERT"; fields="text_field: s1, text_pair_field: s2" ;;
    masked_lm)
      model="{arch: bert, config: $bert_model}"; tok="$BERT"; fields="text_field: s1, mlm_probability: 0.3" ;;
    sft)
      model="{arch: llama, config: {hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64}}"
      tok="$GPT2"; fields="prompt_field: prompt" ;;
    sft_tp)  # two KV heads and an untied head, so that both split over 2 ranks
      model="{arch: llama, config: {hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: false}}"
      tok="$GPT2"; fields="prompt_field: prompt" ;;
  esac
  cat <<YAML
output_dir: $2
seed: 5
task: ${1%_tp}
model: $model
tokenizer: $tok
data: {train: [$TMP/records.jsonl], val: [$TMP/val.jsonl], seq_len: 24, shuffle: true, $fields}
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.1}
train: {micro_batch_size: $3, max_steps: 5, log_every: 1, grad_clip: 1.0, eval_every: 5}
distributed: {zero_stage: $4, tensor_parallel: ${5:-1}}
YAML
}

vals() {  # vals METRICS KEY
  awk -v key="\"$2\": " '{ i = index($0, key); if (i) { s = substr($0, i + length(key));
    sub(/[,}].*/, "", s); print s } }' "$1"
}

same() {  # same WHAT FILE1 FILE2 EXPECTED_LINES
  paste "$2" "$3" > "$TMP/pairs"
  if [ "$(wc -l < "$TMP/pairs")" -ne "$4" ] || ! awk '{ d = $1 - $2; if (d < 0) d = -d;
        s = $1 < 0 ? -$1 : $1; if ($2 == "" || d > 1e-5 * s + 1e-7) bad = 1 } END { exit bad }' \
        "$TMP/pairs"; then
    echo "FAIL: $1 differs between -np 1 and -np 2 (np1 np2):"; cat "$TMP/pairs"; fail=1
  fi
}

# SFT under tensor parallelism too: both ranks see the whole batch, and the counted positions'
# hidden states reach the vocabulary-split head and its loss.
for spec in "sequence_classification 0 1 BertForSequenceClassification" \
            "sft 3 1 LlamaForCausalLM" "masked_lm 1 1 BertForMaskedLM" "sft_tp 0 2 LlamaForCausalLM"; do
  read -r task zero tp arch <<<"$spec"
  task_yaml "$task" "$TMP/$task-np1" 4 0 > "$TMP/$task-np1.yaml"
  task_yaml "$task" "$TMP/$task-np2" $((4 * tp / 2)) "$zero" "$tp" > "$TMP/$task-np2.yaml"
  if ! "$HFRUN" -np 1 "$TMP/$task-np1.yaml" > "$TMP/$task-np1.log" 2>&1; then
    echo "FAIL: $task -np 1 failed"; cat "$TMP/$task-np1.log"; fail=1; continue
  fi
  if ! "$HFRUN" -np 2 --oversubscribe "$TMP/$task-np2.yaml" > "$TMP/$task-np2.log" 2>&1; then
    echo "FAIL: $task -np 2 failed"; cat "$TMP/$task-np2.log"; fail=1; continue
  fi
  echo "== $task"; cat "$TMP/$task-np2.log"
  for key in loss grad_norm val_loss; do
    lines=5; [ "$key" = val_loss ] && lines=1
    vals "$TMP/$task-np1/metrics.jsonl" "$key" > "$TMP/a"
    vals "$TMP/$task-np2/metrics.jsonl" "$key" > "$TMP/b"
    same "$task $key" "$TMP/a" "$TMP/b" "$lines"
  done
  if [ "$task" = sequence_classification ]; then
    for key in val_accuracy val_f1; do
      vals "$TMP/$task-np1/metrics.jsonl" "$key" > "$TMP/a"
      vals "$TMP/$task-np2/metrics.jsonl" "$key" > "$TMP/b"
      same "$task $key" "$TMP/a" "$TMP/b" 1
    done
    grep -q 'val_accuracy' "$TMP/$task-np1.log" || { echo "FAIL: no val_accuracy printed"; fail=1; }
  fi
  if ! grep -q "\"$arch\"" "$TMP/$task-np2/final/config.json"; then
    echo "FAIL: $task final/config.json is not a $arch"; cat "$TMP/$task-np2/final/config.json"; fail=1
  fi
done

# A label outside label2id: exit 2 naming the record.
sed 's/"label": "neg"/"label": "maybe"/' "$TMP/records.jsonl" > "$TMP/bad.jsonl"
task_yaml sequence_classification "$TMP/bad" 4 0 | sed "s#$TMP/records.jsonl#$TMP/bad.jsonl#" > "$TMP/bad.yaml"
"$HFRUN" "$TMP/bad.yaml" > "$TMP/bad.log" 2>&1
rc=$?
if [ "$rc" -ne 2 ] || ! grep -q "bad.jsonl:1" "$TMP/bad.log" || ! grep -q "maybe" "$TMP/bad.log"; then
  echo "FAIL: a label not in label2id: rc $rc (want 2) or the record is not named:"
  cat "$TMP/bad.log"; fail=1
fi

# A record without the completion field: exit 2 naming the record and the field.
sed '3s/"completion"/"answer"/' "$TMP/records.jsonl" > "$TMP/missing.jsonl"
task_yaml sft "$TMP/missing" 4 0 | sed "s#$TMP/records.jsonl#$TMP/missing.jsonl#" > "$TMP/missing.yaml"
"$HFRUN" "$TMP/missing.yaml" > "$TMP/missing.log" 2>&1
rc=$?
if [ "$rc" -ne 2 ] || ! grep -q "missing.jsonl:3" "$TMP/missing.log" || ! grep -q "completion" "$TMP/missing.log"; then
  echo "FAIL: a record without its completion: rc $rc (want 2) or not named:"
  cat "$TMP/missing.log"; fail=1
fi

[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
