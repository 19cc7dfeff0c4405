# Shared by the shell tests that train a tiny GPT-2 through the hfrun executable (sourced).
#   tiny_corpus FILE              100 short lines of text, enough for a few hundred steps
#   losses METRICS_JSONL          the "loss" values, one per line, as written
#   wait_for FILE PATTERN SECONDS until FILE contains PATTERN (1 when it did not in time)

tiny_corpus() {
  for i in $(seq 100); do echo "Line $i: $((i * 7 % 11)) birds sing over the river."; done > "$1"
}

losses() {
  awk 'match($0, /"loss": [-0-9.eE+]+/) { print substr($0, RSTART + 8, RLENGTH - 8) }' "$1"
}

wait_for() {
  for _ in $(seq $(($3 * 20))); do
    grep -q -- "$2" "$1" 2> /dev/null && return 0
    sleep 0.05
  done
  return 1
}
