# shellcheck shell=bash
# The shell tests' assertions. Source after setting pass=0 fail=0; each check counts into them.

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

lacks() {  # lacks NAME NEEDLE
  if grep -qE -- "$2" <<<"$out"; then
    fail=$((fail + 1))
    echo "FAIL: $1: output has /$2/"
    echo "$out" | head -20
  else pass=$((pass + 1)); fi
}
