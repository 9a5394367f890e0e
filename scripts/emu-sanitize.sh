#!/usr/bin/env bash
# The host executor's sanitizer lane (DESIGN.md §5, layer 3): builds the executor, the self-test
# kernels (cuda/selftest.cu) and the driver in cuda/host/sanitize/ with g++, and runs tiny cases:
#   - fiber mode (what `cargo test` uses), with the x86-64 context switch and with ucontext;
#   - thread mode (one OS thread per CUDA thread) under ThreadSanitizer;
#   - thread mode under AddressSanitizer + UndefinedBehaviorSanitizer.
# It also checks that the lane can fail: the build without the SGEMM's first barrier
# (ALEXNET_DROP_TEST_BARRIER) must give wrong results in fiber mode and a data race under
# ThreadSanitizer, and the build that reads past a dynamic shared buffer
# (ALEXNET_SELFTEST_OVERRUN) must be reported by AddressSanitizer.
# Exits non-zero when any of that does not happen. Binaries and logs: $EMU_SANITIZE_DIR
# (default target/emu-sanitize). Compiler: $CXX (default g++).
set -euo pipefail
cd "$(dirname "$0")/.."

cxx=${CXX:-g++}
out=${EMU_SANITIZE_DIR:-target/emu-sanitize}
mkdir -p "$out"

flags=(-std=c++17 -g -Wall -Wextra -Wno-unknown-pragmas -fno-strict-aliasing -Icuda/host -Icuda -pthread)
sources=(cuda/host/executor.cpp cuda/host/sanitize/*.cpp)
fibers=(-O2)
threads=(-O1 -DALEXNET_EMU_THREAD_MODE -DALEXNET_EMU_NO_SHARED_SECTION)
tsan=(-fsanitize=thread)
asan=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

# Distinct exit statuses: 1 is a case's wrong result, 66 a ThreadSanitizer report, 67 an
# AddressSanitizer report.
export TSAN_OPTIONS="halt_on_error=1 exitcode=66"
export ASAN_OPTIONS="halt_on_error=1 exitcode=67 detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1"

failed=0

build() {
  local name=$1
  shift
  echo "build  $name"
  "$cxx" "${flags[@]}" "$@" "${sources[@]}" -o "$out/$name"
}

# expect NAME STATUS PATTERN ARGS...: runs $out/NAME ARGS; its exit status must be STATUS and,
# when PATTERN is not empty, its output must contain PATTERN.
expect() {
  local name=$1 want=$2 pattern=$3
  shift 3
  local log="$out/$name.log" rc=0
  "$out/$name" "$@" >"$log" 2>&1 || rc=$?
  if [[ $rc -ne $want ]] || { [[ -n $pattern ]] && ! grep -q "$pattern" "$log"; }; then
    echo "FAILED $name $*: exit status $rc (expected $want${pattern:+, and output with \"$pattern\"}); log:"
    sed 's/^/    /' "$log" | head -60
    failed=1
  else
    echo "ok     $name $*"
  fi
}

build fibers "${fibers[@]}"
expect fibers 0 "" fibers
build fibers-ucontext "${fibers[@]}" -DALEXNET_EMU_UCONTEXT
expect fibers-ucontext 0 "" fibers
build fibers-nobarrier "${fibers[@]}" -DALEXNET_DROP_TEST_BARRIER
expect fibers-nobarrier 1 "sgemm.*FAILED" fibers sgemm
expect fibers-nobarrier 1 "igemm.*FAILED" fibers igemm
build fibers-nowait "${fibers[@]}" -DALEXNET_DROP_TEST_ASYNC_WAIT
expect fibers-nowait 1 "igemm.*FAILED" fibers igemm

build tsan "${threads[@]}" "${tsan[@]}"
expect tsan 0 "" threads
build tsan-nobarrier "${threads[@]}" "${tsan[@]}" -DALEXNET_DROP_TEST_BARRIER
expect tsan-nobarrier 66 "ThreadSanitizer: data race" threads sgemm
expect tsan-nobarrier 66 "ThreadSanitizer: data race" threads igemm

build asan "${threads[@]}" "${asan[@]}"
expect asan 0 "" threads
build asan-overrun "${threads[@]}" "${asan[@]}" -DALEXNET_SELFTEST_OVERRUN
expect asan-overrun 67 "heap-buffer-overflow" threads dynamic_reverse

if [[ $failed -ne 0 ]]; then
  echo "emu-sanitize: FAILED (logs in $out)"
  exit 1
fi
echo "emu-sanitize: all passed"
