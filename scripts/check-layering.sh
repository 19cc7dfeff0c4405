#!/usr/bin/env bash
# Enforces the module dependency direction of the README's architecture section: a module may
# include headers only from itself and the modules below it. Run by ctest (layering test).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

declare -A allowed=(
  [common]="common"
  [tensor]="common tensor"
  [autograd]="common tensor autograd"
  [io]="common tensor io"
  [nn]="common tensor autograd nn"
  [models]="common tensor autograd io nn models"
  [optim]="common tensor autograd optim"
  [data]="common tensor data"
  [distributed]="common tensor autograd io nn optim distributed"
  [train]="common tensor autograd io nn models optim data distributed train"
  [bench]="common tensor autograd io nn models optim data distributed train bench"
  [launcher]="common tensor autograd io nn models optim data distributed train bench launcher"
)
modules="common tensor autograd io nn models optim data distributed train bench launcher"

status=0
for mod in ${!allowed[@]}; do
  dir="$root/$mod"
  [ -d "$dir" ] || continue
  while IFS= read -r line; do
    file="${line%%:*}"
    inc="$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"$line")"
    target="${inc%%/*}"
    # Only project modules are policed; "tests/", system and foreign headers are not ours.
    [[ " $modules " == *" $target "* ]] || continue
    if [[ " ${allowed[$mod]} " != *" $target "* ]]; then
      echo "layering violation: ${file#$root/} includes \"$inc\" ($mod may not depend on $target)"
      status=1
    fi
  done < <(grep -rHE '^\s*#include "' "$dir" --include='*.h' --include='*.cpp' --include='*.cu' --include='*.cuh' || true)
done
# No foreign library header in a public header (DESIGN.md): mpi.h, nccl.h, dnnl, cuda_runtime.h.
if grep -rnE '#include\s*[<"](mpi\.h|nccl\.h|oneapi/dnnl/|dnnl\.hpp|cuda_runtime\.h|cublas)' \
     "$root"/{common,tensor,autograd,nn,models,optim,data,distributed,train} --include='*.h' 2>/dev/null \
     | grep -v '/backend/' ; then
  echo "layering violation: a foreign library header is included from a public header (above)"
  status=1
fi
[ $status -eq 0 ] && echo "layering ok"
exit $status
