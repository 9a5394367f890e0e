#!/usr/bin/env bash
# The static regression guard of the GEMM kernels (cuda/conv.cu, cuda/fc.cu): compiles them for
# sm_90 with the flags build.rs uses, disassembles them, and checks every kernel listed in
# benches/sass-floors.txt for spills, registers and its hot loop's FFMA share (scripts/sass_guard.py).
# Needs nvcc 13.0 (NVCC=..., as .ci/run exports it) and CUDA 13.2's cuobjdump/nvdisasm, which it
# installs from PyPI into a virtual environment once (SASS_TOOLS_DIR, default ~/.cache).
#   usage: scripts/sass-guard.sh [OUT_DIR]   (default target/sass-guard)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/sass-guard}
nvcc=${NVCC:-nvcc}
if ! command -v "$nvcc" >/dev/null 2>&1; then
  echo "sass-guard: SKIP: no nvcc (set NVCC=...; ../shared/tools/install-nvcc.sh installs 13.0)"
  exit 0
fi
tools=${SASS_TOOLS_DIR:-$HOME/.cache/alexnet-cuda-binutils-13.2}
find_cuobjdump() { ls "$tools"/lib/python3*/site-packages/nvidia/cu13/bin/cuobjdump 2>/dev/null | head -n 1; }
cuobjdump=$(find_cuobjdump || true)
if [[ -z $cuobjdump ]]; then
  python3 -m venv "$tools" >&2
  "$tools/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-cuobjdump==13.2.*" "nvidia-cuda-nvdisasm==13.2.*" >&2
  cuobjdump=$(find_cuobjdump)
fi
export PATH="$(dirname "$cuobjdump"):$PATH"  # cuobjdump runs nvdisasm
mkdir -p "$out"
modules=(conv fc)
for m in "${modules[@]}"; do
  "$nvcc" -cubin -O3 -std=c++17 -lineinfo -Xptxas -v -I cuda \
    -gencode arch=compute_90,code=sm_90 -o "$out/$m.cubin" "cuda/$m.cu" 2>"$out/$m.ptxas.txt"
  "$cuobjdump" -sass "$out/$m.cubin" >"$out/$m.sass"
done
python3 scripts/sass_guard.py benches/sass-floors.txt "$out" "${modules[@]}"
