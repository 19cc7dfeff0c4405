# shellcheck shell=bash
# Shared by the shell tests that train a tiny GPT-2 through the hfrun executable (sourced).
#   tiny_corpus FILE              100 short lines of text, enough for a few hundred steps
#   losses METRICS_JSONL          the "loss" values, one per line, as written
#   wait_for FILE PATTERN SECONDS until FILE contains PATTERN (1 when it did not in time)
#   tiny_cfg OUTPUT_DIR CORPUS MAX_STEPS [YAML_LINE ...]
#                                 a train.yaml for a 1-layer GPT-2 (tokenizer $GPT2) on CORPUS,
#                                 logging every step; further top-level lines appended

tiny_corpus() {
  for i in $(seq 100); do echo "Line $i: $((i * 7 % 11)) birds sing over the river."; done > "$1"
}

losses() {
  awk 'match($0, /"loss": [-0-9.eE+]+/) { print substr($0, RSTART + 8, RLENGTH - 8) }' "$1"
}

# Waits scale with HFRUN_TEST_SLOW (4 in sanitized builds: tests/CMakeLists.txt).
TEST_SLOW=${HFRUN_TEST_SLOW:-1}
wait_for() {
  for _ in $(seq $(($3 * 20 * TEST_SLOW))); do
    grep -q -- "$2" "$1" 2> /dev/null && return 0
    sleep 0.05
  done
  return 1
}

tiny_cfg() {
  cat << YAML
output_dir: $1
seed: 3
model: {config: {n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32}}
tokenizer: $GPT2
data: {train: [$2], seq_len: 16}
optimizer: {type: adamw, lr: 0.01}
train: {micro_batch_size: 1, max_steps: $3, log_every: 1}
YAML
  shift 3
  [ $# -eq 0 ] || printf '%s\n' "$@"
}
