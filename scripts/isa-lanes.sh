#!/usr/bin/env bash
# The CPU path's checks on every instruction set below this CPU's best: the kernels are one
# source instantiated for AVX-512, AVX2 and a portable fallback (src/ops/simd.rs), and the plain
# `cargo test` runs only the best. ALEXNET_CPU_ISA holds them to each lower set in turn for the
# fast-versus-naive, gradient and whole-network checks (the unit tests in src/ops compare the
# sets' kernels directly, in one process). Run after `cargo test --release` (it reuses its build).
set -euo pipefail
cd "$(dirname "$0")/.."
best=portable
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && best=avx2
grep -qw avx512f /proc/cpuinfo && best=avx512
case $best in
  avx512) lower=(avx2 portable) ;;
  avx2) lower=(portable) ;;
  *) lower=() ;;
esac
for isa in "${lower[@]}"; do
  echo "== ALEXNET_CPU_ISA=$isa (this CPU's best: $best)"
  ALEXNET_CPU_ISA=$isa cargo test --release --test reference_fast_vs_naive \
    --test reference_gradcheck --test reference_network --test golden_jax
done
