#!/usr/bin/env bash
# The GPU machine's check (DESIGN.md §5, layer 4), run beside the binaries that
# scripts/gpu-bundle.sh built elsewhere (the GPU machine has a driver, but no Rust toolchain and
# no network):
#     bash gpu-bundle/scripts/gpu-check.sh [OUT_DIR]      (default: $OUT, else ./gpu-check-out)
# Each check logs to OUT_DIR/<check>.log:
#   nvidia-smi; alexnet devices; the library's unit tests; the GPU tests with
#   ALEXNET_REQUIRE_GPU=1 (a skipped test fails); compute-sanitizer memcheck, racecheck and
#   synccheck on a tiny two-tower training step (SKIP, said so, where the sanitizer refuses the
#   device, as it does under gVisor); a short synthetic training run with
#   --device cuda; PyTorch's logits from a checkpoint against ours (tests/golden_torch_peer); every bench executable (ops on the GPU, its JSON under OUT_DIR/target/bench;
#   the loader on the machine's cores, beside Pillow where it imports);
#   scripts/peer_bench.py where PyTorch with CUDA imports; ours and the peer's side by side.
# It prints a table last (check, result, seconds), also written to OUT_DIR/summary.txt, and
# exits non-zero if any check failed. GPU_CHECK_TIMEOUT bounds each check (seconds, default 300);
# GPU_CHECK_BUDGET the whole run (default 540, so a lease of minutes still gets its table): a
# check that would start with under 15 s left is skipped and says so. GPU tests come first, then
# the sanitizers and a training run, then the benchmarks.
# GPU_CHECK_ARCHIVE=FILE.tar.gz also packs every log, JSON and summary (files under 4 MiB, so no
# checkpoints) into that one file: a device run brings back only a few files, so run it as
#     GPU_CHECK_ARCHIVE=$OUT/gpu-check.tar.gz bash gpu-bundle/scripts/gpu-check.sh /tmp/gpu-check
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-${OUT:-$PWD/gpu-check-out}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
per_check=${GPU_CHECK_TIMEOUT:-300}
deadline=$(( $(date +%s) + ${GPU_CHECK_BUDGET:-540} ))
limit=$per_check
# Errors print their message, not a backtrace; panics keep theirs (RUST_BACKTRACE).
export RUST_LIB_BACKTRACE=0

if [ ! -x "$root/bin/alexnet" ] || [ ! -x "$root/tests/gpu_engine" ]; then
    echo "error: $root has no bin/alexnet or tests/gpu_engine: run this script from the bundle that" >&2
    echo "scripts/gpu-bundle.sh makes (gpu-bundle/scripts/gpu-check.sh)" >&2
    exit 2
fi

names=()
results=()
seconds=()

# check NAME FUNCTION [ARGS...]: runs the function with its output in $out/NAME.log. Its status:
# 0 PASS, 77 SKIP (the reason is in the log), 124 a timeout, anything else FAIL.
check() {
    local name=$1
    shift
    local log="$out/$name.log"
    echo "== $name"
    local t0 t1 rc result left
    t0=$(date +%s.%N)
    left=$(( deadline - $(date +%s) ))
    if [ "$left" -lt 15 ]; then
        echo "not run: the GPU_CHECK_BUDGET is spent" >"$log"
        rc=78
    else
        limit=$(( left < per_check ? left : per_check ))
        "$@" >"$log" 2>&1
        rc=$?
    fi
    t1=$(date +%s.%N)
    case $rc in
        0) result=PASS ;;
        77) result=SKIP ;;
        78) result="SKIP (no time)" ;;
        124) result="FAIL (timeout)" ;;
        *) result="FAIL (exit $rc)" ;;
    esac
    names+=("$name")
    results+=("$result")
    seconds+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')")
    echo "   $result ($log)"
    tail -n 3 "$log" | sed 's/^/   | /'
}

# Where the CUDA libraries are: the binaries load the driver (libcuda) at run time; cuBLAS and
# the rest are found here for anything that wants them.
find_libs() {
    echo "bundle: $root"
    cat "$root/BUNDLE.txt" 2>/dev/null
    local found d dirs=()
    # Not the toolkit's stubs (a stub libcuda there would shadow the driver: cuInit then fails
    # with CUDA_ERROR_STUB_LIBRARY), and no folder holding a libcuda of its own (cuda-compat):
    # the driver is the system's.
    found=$(timeout 120 find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
        -name 'libcublas.so*' -not -path '*/stubs/*' -print 2>/dev/null | xargs -r -n1 dirname | sort -u)
    echo "libcublas found in: ${found:-nowhere}"
    for d in $found; do
        if ls "$d"/libcuda.so* >/dev/null 2>&1; then
            echo "  not adding $d: it holds a libcuda of its own"
        else
            dirs+=("$d")
        fi
    done
    if [ ${#dirs[@]} -gt 0 ]; then
        LD_LIBRARY_PATH="$(IFS=:; echo "${dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    echo "libcuda as the loader sees it:"
    ldconfig -p 2>/dev/null | grep -E 'libcuda\.so' || echo "  (not in the ldconfig cache)"
}
# Run in this shell (not through `check`), so the export reaches every later check.
find_libs >"$out/libs.log" 2>&1
cat "$out/libs.log"

smi() {
    nvidia-smi || return
    nvidia-smi topo -m
}

devices() {
    "$root/bin/alexnet" devices || return
    # A usable GPU must be listed; "none usable" is a failure here.
    "$root/bin/alexnet" devices | grep -q '^  cuda:0 '
}

unit_tests() {
    ALEXNET_REQUIRE_GPU=1 timeout "$limit" "$root/tests/alexnet-lib" --test-threads=1
}

# torch_peer: PyTorch's logits from the checkpoint against the engine's (the GPU machine has
# PyTorch; the test itself says SKIP where torch does not import).
torch_peer() {
    ALEXNET_BIN="$root/bin/alexnet" ALEXNET_TORCH_SCRIPT="$root/scripts/torch_alexnet.py" \
        timeout "$limit" "$root/tests/golden_torch_peer" --test-threads=1 --nocapture
}

# A world of one data-parallel replica over NCCL steps as the plain network does (SKIP where
# libnccl is not on the GPU machine: the test says so in one line).
nccl_world_of_one() {
    [ -x "$root/tests/dist_data_parallel" ] || { echo "SKIP: no tests/dist_data_parallel in the bundle"; return 77; }
    timeout "$limit" "$root/tests/dist_data_parallel" a_world_of_one_over_nccl_equals_the_plain_step --exact --nocapture || return
    if grep -q '^SKIP' "$out/nccl-world-of-one.log"; then return 77; fi
}

gpu_tests() {
    ALEXNET_REQUIRE_GPU=1 timeout "$limit" "$root/tests/gpu_engine" --test-threads=1 --nocapture || return
    # ALEXNET_REQUIRE_GPU=1 already fails a skip; this guards against a test that skips anyway.
    if grep -q '^SKIP' "$out/gpu-tests.log"; then
        echo "a GPU test skipped on the GPU machine"
        return 1
    fi
}

sanitizer=$(command -v compute-sanitizer || true)
if [ -z "$sanitizer" ]; then
    sanitizer=$(ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
fi
if [ -z "$sanitizer" ]; then
    sanitizer=$(timeout 120 find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
        -type f -name compute-sanitizer -print 2>/dev/null | head -n 1)
fi

# Set when compute-sanitizer refuses the device: some sandboxed runtimes (gVisor) answer
# "Device not supported" for any program, so the later tools are not tried.
sanitizer_refused=""

# sanitize TOOL: the tiny two-tower step (both towers on GPU 0, two streams) under the tool.
sanitize() {
    if [ -z "$sanitizer" ]; then
        echo "compute-sanitizer not found on this machine"
        return 77
    fi
    if [ -n "$sanitizer_refused" ]; then
        echo "not run: $sanitizer_refused"
        return 77
    fi
    echo "$sanitizer --tool $1"
    ALEXNET_REQUIRE_GPU=1 timeout "$limit" "$sanitizer" --tool "$1" --error-exitcode 99 \
        "$root/tests/gpu_engine" a_tiny_two_tower_step_matches_the_cpu --exact --test-threads=1 --nocapture
    local rc=$?
    # Only the sanitizer's own refusal is a skip; an error it finds in our kernels stays a FAIL.
    if [ $rc -ne 0 ] && grep -q 'Device not supported' "$out/sanitizer-$1.log"; then
        sanitizer_refused="compute-sanitizer refused this device (\"Device not supported\")"
        echo "SKIP: $sanitizer_refused; this runtime cannot sanitize, the kernels were not judged"
        return 77
    fi
    return $rc
}

# train_run PRECISION: 50 synthetic steps on GPU 0 at that precision.
train_run() {
    timeout "$limit" "$root/bin/alexnet" train --device cuda --devices 0 --max-steps 50 \
        --precision "$1" --no-progress --out "$out/train-run-$1"
}

# bench NAME: one bench executable; ops chooses the GPU.
bench() {
    CARGO_TARGET_DIR="$out/target" ALEXNET_BENCH_DEVICE=cuda \
        ALEXNET_LOADER_DATA="$root/data/imagenet-samples" \
        ALEXNET_LOADER_BASELINE="$root/scripts/loader_baseline.py" \
        timeout "$limit" "$root/benches/$1"
}

peer_bench() {
    if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        echo "PyTorch with CUDA does not import here: no peer numbers"
        return 77
    fi
    timeout "$limit" python3 "$root/scripts/peer_bench.py" --out "$out"
}

check nvidia-smi smi
check devices devices
check gpu-tests gpu_tests
check unit-tests unit_tests
for tool in memcheck racecheck synccheck; do
    check "sanitizer-$tool" sanitize "$tool"
done
check torch-peer torch_peer
check nccl-world-of-one nccl_world_of_one
check train-cuda train_run fp32
check train-cuda-bf16 train_run bf16
for b in "$root"/benches/*; do
    [ -x "$b" ] && check "bench-$(basename "$b")" bench "$(basename "$b")"
done
check peer-bench peer_bench

side_by_side() {
    local ops="$out/target/bench/ops.json" step="$out/target/bench/step.json" peer="$out/peer.json"
    for f in "$ops" "$step" "$peer"; do
        [ -f "$f" ] || { echo "no $f: nothing to compare"; return 77; }
    done
    python3 "$root/scripts/side_by_side.py" "$ops" "$step" "$peer"
}
check side-by-side side_by_side
echo
cat "$out/side-by-side.log"

{
    printf '\n%-24s %-18s %8s\n' check result seconds
    for i in "${!names[@]}"; do
        printf '%-24s %-18s %8s\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}"
    done
} | tee "$out/summary.txt"

if [ -n "${GPU_CHECK_ARCHIVE:-}" ]; then
    (cd "$out" && find . -type f -size -4M -print0 | tar czf "$GPU_CHECK_ARCHIVE" --null -T -) &&
        echo "logs and JSON packed into $GPU_CHECK_ARCHIVE" ||
        echo "could not pack the logs into $GPU_CHECK_ARCHIVE"
fi

for r in "${results[@]}"; do
    case $r in FAIL*) exit 1 ;; esac
done
exit 0
