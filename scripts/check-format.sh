#!/usr/bin/env bash
# Fails when a tracked C++ file differs from .clang-format's style (fix: clang-format -i FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' 2>/dev/null || find . -name '*.h' -o -name '*.cpp')
clang-format --dry-run -Werror $files
echo "format ok"
