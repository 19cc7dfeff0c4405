#!/usr/bin/env bash
# End-to-end checks of the hfrun executable: exit codes, --version, env, bench JSON output.
# Usage: test_cli.sh PATH/TO/hfrun
set -uo pipefail
HFRUN="$1"
pass=0
fail=0

check() {  # check NAME EXPECTED_RC COMMAND... ; output in $out
  local name="$1" want="$2"
  shift 2
  out="$("$@" 2>&1)"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $name: exit $rc, expected $want"
    echo "$out" | head -20
  fi
}

contains() {  # contains NAME NEEDLE
  if grep -qE -- "$2" <<<"$out"; then pass=$((pass + 1)); else
    fail=$((fail + 1))
    echo "FAIL: $1: output lacks /$2/"
    echo "$out" | head -20
  fi
}

check "version" 0 "$HFRUN" --version
contains "version" '^hfrun [0-9]+\.[0-9]+\.[0-9]+$'
check "help" 0 "$HFRUN" --help
contains "help" 'bench matmul'
check "no args is usage error" 2 "$HFRUN"
check "unknown command" 2 "$HFRUN" frobnicate
contains "unknown command" "unknown command 'frobnicate'"
check "env" 0 "$HFRUN" env
contains "env" 'onednn: +[0-9]+\.[0-9]+'
contains "env" 'cpu isa: +[a-z0-9_]+'
check "bench matmul f32" 0 "$HFRUN" bench matmul --m 64 --n 48 --k 32 --dtype f32 --baseline --min-seconds 0.05
contains "bench matmul f32" '^\{.*"gflops": ?[0-9.]+.*"baseline_gflops": ?[0-9.]+.*\}$'
check "bench matmul bf16" 0 "$HFRUN" bench matmul --m 64 --n 64 --k 64 --dtype bf16 --min-seconds 0.05
contains "bench matmul bf16" '"dtype": ?"bf16"'
check "bench matmul bad dtype" 2 "$HFRUN" bench matmul --dtype f64
contains "bench matmul bad dtype" "f64"
check "bench matmul bad size" 2 "$HFRUN" bench matmul --m 0
check "bench matmul unknown option" 2 "$HFRUN" bench matmul --mm 3
check "bench matmul help" 0 "$HFRUN" bench matmul --help
check "bench block" 0 "$HFRUN" bench block --batch 1 --seq 16 --dim 64 --heads 4 --iters 2
contains "bench block" '"outside_matmul_fraction": ?[0-9.]+'
check "bench block bad heads" 2 "$HFRUN" bench block --dim 64 --heads 5
check "bench unknown" 2 "$HFRUN" bench nothing

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
