#!/usr/bin/env bash
# Builds, on a machine with Rust and nvcc (no GPU needed), everything the GPU machine runs — it
# has a driver but no Rust toolchain and no network — and gathers it in gpu-bundle/:
#   bin/alexnet                 the CLI
#   tests/gpu_engine            the GPU integration tests
#   tests/alexnet-lib           the library's unit tests
#   tests/golden_torch_peer     PyTorch (scripts/torch_alexnet.py) against the engine's logits
#   tests/dist_data_parallel    a world of one replica over NCCL against the plain step
#   benches/<name>              every bench executable
#   scripts/gpu-check.sh, scripts/peer_bench.py, scripts/side_by_side.py,
#   scripts/loader_baseline.py
#   data/imagenet-samples       the shared ImageNet samples, for the loader bench (when present
#                               beside the repository; ALEXNET_LOADER_DATA names another tree)
#   BUNDLE.txt                  commit, build date, kernel targets
# Debug info is stripped so the bundle stays under 64 MiB (the most a device run can carry); it
# prints the bundle's size and fails above that.
#
# nvcc is found as build.rs finds it (NVCC, CUDA_HOME/CUDA_PATH, PATH); a build without GPU
# kernels is refused. ALEXNET_CUDA_ARCHS chooses the SASS targets (default 80,90).
# Then, on the GPU machine: bash gpu-bundle/scripts/gpu-check.sh OUT_DIR (see its header for
# GPU_CHECK_ARCHIVE, which packs the logs into one file)
set -euo pipefail
cd "$(dirname "$0")/.."

bundle=gpu-bundle
limit=$((64 * 1024 * 1024))
# Test executables worth running on a GPU: the GPU tests and the library's unit tests (the
# runtime's own tests). The rest run anywhere and are CI's.
tests_wanted=${GPU_BUNDLE_TESTS:-gpu_engine alexnet-lib golden_torch_peer dist_data_parallel}

echo "== cargo build --release --bins --tests --benches"
cargo build --release --bins --tests --benches

if ! target/release/alexnet devices | grep -q "embedded in this build: yes"; then
    echo "error: this build has no GPU kernels (nvcc not found). Install it with" >&2
    echo "  ../shared/tools/install-nvcc.sh and export the NVCC=... line it prints." >&2
    exit 1
fi

# Executables as cargo reports them: "name kind path" per line.
artifacts() {
    jq -r 'select(.reason == "compiler-artifact" and .executable != null)
           | "\(.target.name) \(.target.kind | join(",")) \(.executable)"'
}
test_list=$(cargo test --release --no-run --message-format=json 2>/dev/null | artifacts)
bench_list=$(cargo build --release --benches --message-format=json 2>/dev/null | artifacts |
    awk '$2 == "bench"')

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/tests" "$bundle/benches" "$bundle/scripts"

# Copies $1 to $2 without debug info (symbols stay, so backtraces still name functions).
put() {
    objcopy --strip-debug "$1" "$2"
    chmod +x "$2"
}

put target/release/alexnet "$bundle/bin/alexnet"
while read -r name kind path; do
    [ -n "$name" ] || continue
    case "$kind" in
        lib) dest=alexnet-lib ;;
        test) dest=$name ;;
        *) continue ;;
    esac
    for want in $tests_wanted; do
        if [ "$want" = "$dest" ]; then put "$path" "$bundle/tests/$dest"; fi
    done
done <<< "$test_list"
while read -r name kind path; do
    [ -n "$name" ] && put "$path" "$bundle/benches/$name"
done <<< "$bench_list"
for want in $tests_wanted; do
    if [ ! -x "$bundle/tests/$want" ]; then
        echo "error: no test executable $want among: $(echo "$test_list" | awk '{print $1 "(" $2 ")"}' | tr '\n' ' ')" >&2
        exit 1
    fi
done

cp scripts/gpu-check.sh scripts/peer_bench.py scripts/side_by_side.py scripts/loader_baseline.py \
    scripts/torch_alexnet.py \
    "$bundle/scripts/"
samples=${ALEXNET_LOADER_DATA:-../shared/data/imagenet-samples}
if [ -d "$samples" ]; then
    mkdir -p "$bundle/data"
    cp -r "$samples" "$bundle/data/imagenet-samples"
    chmod -R u+w "$bundle/data"  # a read-only source stays removable in the bundle
else
    echo "note: no $samples: the loader bench will skip on the GPU machine"
fi
{
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    target/release/alexnet devices | head -1
} > "$bundle/BUNDLE.txt"

bytes=$(du -sb "$bundle" | cut -f1)
echo "== $bundle:"
(cd "$bundle" && find . -type f -printf '%10s  %p\n' | sort -k2)
awk -v b="$bytes" -v d="$bundle" 'BEGIN { printf "%s: %d bytes (%.1f MiB; the limit is 64 MiB)\n", d, b, b / 1048576 }'
if [ "$bytes" -ge "$limit" ]; then
    echo "error: the bundle is over 64 MiB" >&2
    exit 1
fi
