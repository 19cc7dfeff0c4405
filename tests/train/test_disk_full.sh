#!/usr/bin/env bash
# A full disk (a small tmpfs the test mounts, so it needs root; skipped otherwise, exit 77):
#  1. a checkpoint that does not fit fails the run (exit 1) naming the file with the OS's
#     "No space left on device"; the committed checkpoints before it stay intact and nothing
#     temporary is left; with space back, the same command resumes from the last one and ends
#     with the losses of an uninterrupted run;
#  2. an export (final/) that does not fit fails the same way, leaves no final/ or temporary
#     directory, and the rerun exports it;
#  3. `hfrun prepare` into a full disk fails naming the shard and leaves no partial shard.
# Usage: test_disk_full.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$1"
GPT2="$2"
TMP="$(mktemp -d)"
DISK="$TMP/disk"
mkdir -p "$DISK"
if [ "$(id -u)" -ne 0 ] || ! mount -t tmpfs -o size=20m tmpfs "$DISK" 2> /dev/null; then
  echo "skipped: mounting a small tmpfs needs root"
  rm -rf "$TMP"
  exit 77
fi
cleanup() { umount "$DISK" 2> /dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
export OMP_NUM_THREADS=1
fail=0
nospace() {  # nospace LOG WHAT: the log names a file under the disk, with ENOSPC's text
  if ! grep -qE "cannot write $DISK/[^ ]+: No space left on device" "$1"; then
    echo "FAIL: $2: no 'cannot write FILE: No space left on device' error:"; cat "$1"; fail=1
  fi
}
leftovers() {  # leftovers DIR: temporary files or directories under DIR
  find "$1" -name '*.tmp*' -o -name '.*.tmp.*' -o -name '*.old-*' 2> /dev/null
}

tiny_corpus "$TMP/f.txt"
# The reference: the same run on the ordinary disk.
tiny_cfg "$TMP/ref" "$TMP/f.txt" 12 "checkpoint: {every: 2, keep: 2}" > "$TMP/ref.yaml"
"$HFRUN" train "$TMP/ref.yaml" > "$TMP/ref.log" 2>&1 || { echo "FAIL: reference run"; cat "$TMP/ref.log"; exit 1; }

# 1. Checkpoints: ~9.6 MB each; 20 MB holds steps 2 and 4, step 6 does not fit.
tiny_cfg "$DISK/run" "$TMP/f.txt" 12 "checkpoint: {every: 2, keep: 2}" > "$TMP/run.yaml"
"$HFRUN" train "$TMP/run.yaml" > "$TMP/full.log" 2>&1
rc=$?
[ $rc -eq 1 ] || { echo "FAIL: checkpoint on a full disk: exit $rc, want 1"; cat "$TMP/full.log"; fail=1; }
nospace "$TMP/full.log" "checkpoint on a full disk"
grep -q "checkpoint step 6 not committed" "$TMP/full.log" || { echo "FAIL: step 6 not named"; fail=1; }
ckpts=$(cd "$DISK/run/checkpoints" && ls | tr '\n' ' ')
[ "$ckpts" = "step-00000002 step-00000004 " ] || { echo "FAIL: checkpoints after the failure: '$ckpts'"; fail=1; }
left=$(leftovers "$DISK/run")
[ -z "$left" ] || { echo "FAIL: a failed checkpoint left: $left"; fail=1; }
mount -o remount,size=60m "$DISK"
"$HFRUN" train "$TMP/run.yaml" > "$TMP/resume.log" 2>&1 || { echo "FAIL: resume with space back"; cat "$TMP/resume.log"; fail=1; }
grep -q "resuming from $DISK/run/checkpoints/step-00000004 (step 4)" "$TMP/resume.log" ||
  { echo "FAIL: did not resume from step 4"; cat "$TMP/resume.log"; fail=1; }
if ! diff <(losses "$TMP/ref/metrics.jsonl") <(losses "$DISK/run/metrics.jsonl") > /dev/null; then
  echo "FAIL: losses after the full disk differ from the uninterrupted run:"
  paste <(losses "$TMP/ref/metrics.jsonl") <(losses "$DISK/run/metrics.jsonl"); fail=1
fi

# 2. Export: no periodic checkpoints; the final one fits (~9.6 MB in 14 MB), final/ does not.
rm -rf "${DISK:?}/run"
mount -o remount,size=14m "$DISK"
"$HFRUN" train "$TMP/run.yaml" --set checkpoint.every=0 > "$TMP/export.log" 2>&1
rc=$?
[ $rc -eq 1 ] || { echo "FAIL: export on a full disk: exit $rc, want 1"; cat "$TMP/export.log"; fail=1; }
nospace "$TMP/export.log" "export on a full disk"
[ ! -e "$DISK/run/final" ] || { echo "FAIL: a failed export left final/"; fail=1; }
left=$(leftovers "$DISK/run")
[ -z "$left" ] || { echo "FAIL: a failed export left: $left"; fail=1; }
mount -o remount,size=60m "$DISK"
"$HFRUN" train "$TMP/run.yaml" --set checkpoint.every=0 > "$TMP/export2.log" 2>&1 ||
  { echo "FAIL: export with space back"; cat "$TMP/export2.log"; fail=1; }
[ -f "$DISK/run/final/model.safetensors" ] && [ -f "$DISK/run/final/tokenizer.json" ] ||
  { echo "FAIL: the rerun did not export final/"; cat "$TMP/export2.log"; fail=1; }

# 3. hfrun prepare: ~0.45 MB of shards into 200 KB.
rm -rf "${DISK:?}/run"
mount -o remount,size=200k "$DISK"
for i in $(seq 30); do cat "$TMP/f.txt"; done > "$TMP/big.txt"
"$HFRUN" prepare --tokenizer "$GPT2" --output "$DISK/shards" "$TMP/big.txt" "$TMP/big.txt" \
  "$TMP/big.txt" "$TMP/big.txt" > "$TMP/prepare.log" 2>&1
rc=$?
[ $rc -eq 1 ] || { echo "FAIL: prepare on a full disk: exit $rc, want 1"; cat "$TMP/prepare.log"; fail=1; }
nospace "$TMP/prepare.log" "prepare on a full disk"
shards=$(ls -A "$DISK/shards" 2> /dev/null | tr '\n' ' ')
[ -z "$shards" ] || { echo "FAIL: a failed prepare left '$shards'"; fail=1; }

[ $fail -eq 0 ] && echo "ok: a full disk fails clearly, keeps what was committed, and resumes"
exit $fail
