#!/usr/bin/env bash
# expect_job_failure.sh MAX_SECONDS REGEX CMD...: passes when CMD exits non-zero within
# MAX_SECONDS and its output (stdout + stderr) matches the extended regex REGEX.
set -uo pipefail
max_s="$1"
regex="$2"
shift 2
start=$(date +%s)
out="$(timeout -k 5 "$max_s" "$@" 2>&1)"
rc=$?
elapsed=$(($(date +%s) - start))
printf '%s\n' "$out"
echo "exit status $rc after ${elapsed}s"
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0"; exit 1; fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: the job hung (killed after ${max_s}s)"; exit 1; fi
if ! grep -qE -- "$regex" <<<"$out"; then echo "FAIL: no line matches: $regex"; exit 1; fi
echo "ok: failed as expected"
