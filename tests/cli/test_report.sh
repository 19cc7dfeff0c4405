#!/usr/bin/env bash
# hfrun report end to end: two real tiny training runs (different lr, with eval lines) and a run
# as a checkpoint restart leaves it (steps logged twice, peak_mem_mb, an incomplete last line)
# into one HTML file; every drawn series is checked against metrics.jsonl, the page is rendered
# by headless Chromium and the screenshot checked for each run's curve colour; then the errors.
# Usage: test_report.sh PATH/TO/hfrun
set -uo pipefail
HFRUN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
PY=/usr/bin/python3
CHECK="$(cd "$(dirname "$0")" && pwd)/report_check.py"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=1
pass=0
fail=0

# shellcheck source=../lib/checks.sh
source "$(dirname "$0")/../lib/checks.sh"

# Two tiny GPT-2 runs on token shards (no tokenizer needed), differing in lr only.
"$PY" "$CHECK" shards "$TMP/data"
run_yaml() {  # run_yaml OUTPUT_DIR LR
  cat <<EOF
output_dir: $1
seed: 3
model: {arch: gpt2, config: {n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32, vocab_size: 64}}
data: {train: [$TMP/data/train.bin], val: [$TMP/data/val.bin], seq_len: 16}
train: {micro_batch_size: 4, max_steps: 30, log_every: 1, eval_every: 10}
optimizer: {lr: $2}
scheduler: {type: cosine, warmup_steps: 5}
EOF
}
run_yaml "$TMP/lr_high" 1e-2 > "$TMP/lr_high.yaml"
run_yaml "$TMP/lr_low" 2e-3 > "$TMP/lr_low.yaml"
check "train lr_high" 0 "$HFRUN" train "$TMP/lr_high.yaml"
check "train lr_low" 0 "$HFRUN" train "$TMP/lr_low.yaml"
for r in lr_high lr_low; do
  grep -q '"val_loss"' "$TMP/$r/metrics.jsonl" && pass=$((pass + 1)) ||
    { fail=$((fail + 1)); echo "FAIL: $r logged no eval lines"; }
done
"$PY" "$CHECK" resumed "$TMP/lr_high" "$TMP/resumed"

# The report of the three runs: every series as in metrics.jsonl (the later line of a repeated
# step wins), pixels following the data, scales, the summary and eval tables.
mkdir -p "$TMP/out"
RUNS=("$TMP/lr_high" "$TMP/lr_low" "$TMP/resumed")
check "report" 0 "$HFRUN" report "${RUNS[@]}" --output "$TMP/out/report.html"
contains "report" "^wrote $TMP/out/report.html \(3 runs\)$"
contains "report skips an incomplete last line" "resumed/metrics.jsonl:[0-9]+: skipping the incomplete last line"
check "report series equal metrics.jsonl" 0 "$PY" "$CHECK" series "$TMP/out/report.html" "${RUNS[@]}"
# Configs are shown HTML-escaped (the parser unescapes them back to the file's text).
check "report config escaped" 0 "$PY" "$CHECK" config "$TMP/out/report.html" 'note: <b>tags & "quotes"</b>'
check "report config of a real run" 0 "$PY" "$CHECK" config "$TMP/out/report.html" "output_dir: $TMP/lr_low"
if grep -q '<b>tags' "$TMP/out/report.html"; then
  fail=$((fail + 1)); echo "FAIL: the config's text reached the page unescaped"
else pass=$((pass + 1)); fi
# Without the run that logs peak_mem_mb there is no memory chart (the checker asserts it).
check "report without memory" 0 "$HFRUN" report "$TMP/lr_high" "$TMP/lr_low" -o "$TMP/out/two.html"
check "report without memory: series" 0 "$PY" "$CHECK" series "$TMP/out/two.html" "$TMP/lr_high" "$TMP/lr_low"
[ "$(ls -A "$TMP/out")" = "$(printf 'report.html\ntwo.html')" ] && pass=$((pass + 1)) ||
  { fail=$((fail + 1)); echo "FAIL: the output directory holds more than the reports:"; ls -A "$TMP/out"; }
# Runs whose directories share a name are told apart by their paths; the default output file.
mkdir -p "$TMP/a" "$TMP/b" "$TMP/cwd"
cp -r "$TMP/lr_low" "$TMP/a/run" && cp -r "$TMP/lr_high" "$TMP/b/run"
check "report same names" 0 sh -c "cd '$TMP/cwd' && '$HFRUN' report ../a/run ../b/run/"
contains "report same names" "^wrote report.html \(2 runs\)$"
grep -q 'data-run="../a/run"' "$TMP/cwd/report.html" && grep -q 'data-run="../b/run/"' "$TMP/cwd/report.html" &&
  pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: runs named alike are not told apart by path"; }

# Rendered by a browser: not blank, and each run's colour drawn along the curves.
if ! command -v chromium >/dev/null; then
  fail=$((fail + 1))
  echo "FAIL: chromium is not installed (scripts/install-deps.sh installs it)"
else
  HOME="$TMP/home" timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$TMP/chromium" --window-size=1200,1700 --screenshot="$TMP/shot.png" \
    "file://$TMP/out/report.html" > "$TMP/chromium.log" 2>&1
  if [ -s "$TMP/shot.png" ]; then
    check "screenshot shows the curves" 0 "$PY" "$CHECK" png "$TMP/shot.png" '#1f77b4' '#ff7f0e' '#2ca02c'
    echo "$out"
  else
    fail=$((fail + 1)); echo "FAIL: chromium wrote no screenshot"; tail -5 "$TMP/chromium.log"
  fi
fi

# Errors: exit 2 naming the path, the line and what was expected; the old report is kept.
before="$(sha256sum < "$TMP/out/report.html")"
check "report missing dir" 2 "$HFRUN" report "$TMP/lr_low" "$TMP/no_such_run" --output "$TMP/out/report.html"
contains "report missing dir" "$TMP/no_such_run: no such run directory"
[ "$(sha256sum < "$TMP/out/report.html")" = "$before" ] && pass=$((pass + 1)) ||
  { fail=$((fail + 1)); echo "FAIL: a failed report changed the existing output"; }
mkdir -p "$TMP/empty_run"
check "report dir without metrics" 2 "$HFRUN" report "$TMP/empty_run"
contains "report dir without metrics" "empty_run/metrics.jsonl: not found"
mkdir -p "$TMP/bad"
{ head -2 "$TMP/lr_low/metrics.jsonl"; echo "not json"; tail -n +3 "$TMP/lr_low/metrics.jsonl"; } > "$TMP/bad/metrics.jsonl"
check "report malformed line" 2 "$HFRUN" report "$TMP/bad" -o "$TMP/out/bad.html"
contains "report malformed line" "bad/metrics.jsonl:3: expected one JSON object per line"
printf '{"step": 1, "loss": 2.5}\n{"loss": 2.4}\n' > "$TMP/bad/metrics.jsonl"
check "report line without step" 2 "$HFRUN" report "$TMP/bad" -o "$TMP/out/bad.html"
contains "report line without step" 'bad/metrics.jsonl:2: expected a "step" key'
printf '{"step": 1, "loss": 2.5}\n{"step": 2, "loss": "low"}\n' > "$TMP/bad/metrics.jsonl"
check "report non-number loss" 2 "$HFRUN" report "$TMP/bad" -o "$TMP/out/bad.html"
contains "report non-number loss" 'bad/metrics.jsonl:2: expected a number for "loss", got "low"'
grep '"val_loss"' "$TMP/lr_low/metrics.jsonl" > "$TMP/bad/metrics.jsonl"
check "report no train lines" 2 "$HFRUN" report "$TMP/bad" -o "$TMP/out/bad.html"
contains "report no train lines" "bad/metrics.jsonl: no training lines"
[ ! -e "$TMP/out/bad.html" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: a failed report wrote its output"; }
check "report output dir missing" 2 "$HFRUN" report "$TMP/lr_low" -o "$TMP/nodir/r.html"
contains "report output dir missing" "nodir"
check "report no runs" 2 "$HFRUN" report
check "report help" 0 "$HFRUN" report --help
contains "report help" "^Usage: hfrun report RUN_DIR"
check "report in hfrun --help" 0 "$HFRUN" --help
contains "report in hfrun --help" "^  hfrun report RUN_DIR"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
