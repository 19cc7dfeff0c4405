#!/usr/bin/env bash
# Installs every build and test dependency of hfrun from Debian packages.
# Idempotent: re-running it installs nothing new. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  libopenmpi-dev openmpi-bin
  libdnnl-dev
  libyaml-cpp-dev
  libboost-program-options-dev
  libgtest-dev
  nlohmann-json3-dev
  libonig-dev
  libicu-dev
  # Checksums of checkpoint files: XXH3-128 (xxHash) for new ones, SHA-256 (libcrypto) for
  # the configuration hash and older manifests.
  libxxhash-dev libssl-dev
  # xxh128sum: the tests check manifests against xxHash's own tool.
  xxhash
  # /usr/bin/time: the estimate-memory test compares with the peak it reports.
  time
  python3-torch libopenblas0-openmp
  # SentencePiece trains the Unigram tokenizer (with its real precompiled NFKC charsmap) that
  # the tokenizer parity tests compare against Hugging Face tokenizers.
  python3-sentencepiece
  # The cluster tests: a throwaway single-node Slurm (cluster/slurm/local-slurm.sh) and
  # network namespaces as nodes (tests/cluster/netns_nodes.sh).
  slurmctld slurmd slurm-client munge iproute2
  # The report test renders `hfrun report`'s HTML headless and checks the screenshot.
  chromium
  # scripts/fuzz.sh: libFuzzer with ASan/UBSan (clang's runtime) and LLVM's OpenMP.
  clang libclang-rt-14-dev libomp-dev
)
# Node.js runs the reference tokenizer (Hugging Face's npm package `tokenizers`) in the parity
# tests. A machine that already has node and npm (e.g. from NodeSource, whose nodejs conflicts
# with Debian's npm) keeps them.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
