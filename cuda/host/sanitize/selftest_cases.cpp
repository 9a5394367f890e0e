// Tiny cases of cuda/selftest.cu for the sanitizer lane: a few blocks of at most 256 threads.

#include "driver.h"

namespace {
#include "../../selftest.cu"
}

namespace {
std::vector<float> data(size_t n, unsigned seed) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) {
        const unsigned x = (unsigned)i * 2654435761u + seed * 40503u;
        v[i] = (float)((x >> 8) % 2000) / 1000.0f - 1.0f;
    }
    return v;
}
}  // namespace

SANITIZE_CASE(sgemm) {
    const int m = 20, n = 18, k = 21;  // 2 x 2 blocks, ragged in every direction
    const auto a = data(m * k, 1), b = data(k * n, 2);
    std::vector<float> c(m * n, 0.0f);
    if (!sanitize::Launch<&selftest_sgemm>::run(dim3(2, 2), dim3(16, 16), 0, m, n, k, a.data(),
                                                b.data(), c.data()))
        return false;
    std::vector<double> want(m * n, 0.0);
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j)
            for (int p = 0; p < k; ++p) want[i * n + j] += (double)a[i * k + p] * b[p * n + j];
    return sanitize::close("sgemm", c, want, 1e-5);  // 21 f32 products per output
}

SANITIZE_CASE(igemm) {
    const int m = 50, n = 130, k = 70;  // 2 x 2 blocks of 48 x 128, K ragged in its last tile
    const auto a = data(m * k, 6), b = data(k * n, 7);
    std::vector<float> c(m * n, 0.0f);
    if (!sanitize::Launch<&selftest_igemm>::run(dim3(2, 2), dim3(128), 48128, m, n, k, a.data(),
                                                b.data(), c.data()))
        return false;
    std::vector<double> want(m * n, 0.0);
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j)
            for (int p = 0; p < k; ++p) want[i * n + j] += (double)a[i * k + p] * b[p * n + j];
    return sanitize::close("igemm", c, want, 1e-5);  // 70 f32 products per output
}

// One warp's tensor-core products (mma.cuh's warp collective) in thread mode: 32 OS threads
// publish and read each other's fragment registers.
SANITIZE_CASE(mma) {
    for (int k : {8, 16}) {
        std::vector<float> a(16 * k), b(k * 8), c(128), d(128, 0.0f);
        std::vector<int> lanes(128, -1);
        for (int i = 0; i < 16 * k; ++i) a[i] = (float)((i * 7) % 9 - 4);  // small integers: exact
        for (int i = 0; i < k * 8; ++i) b[i] = (float)((i * 5) % 7 - 3);
        for (int i = 0; i < 128; ++i) c[i] = (float)(i % 5);
        const bool ok = k == 8 ? sanitize::Launch<&selftest_mma_tf32>::run(
                                     dim3(1), dim3(32), 0, a.data(), b.data(), c.data(), d.data(),
                                     lanes.data())
                               : sanitize::Launch<&selftest_mma_bf16>::run(
                                     dim3(1), dim3(32), 0, a.data(), b.data(), c.data(), d.data(),
                                     lanes.data());
        if (!ok) return false;
        std::vector<double> want(128);
        for (int i = 0; i < 16; ++i)
            for (int j = 0; j < 8; ++j) {
                double s = c[i * 8 + j];
                for (int p = 0; p < k; ++p) s += (double)a[i * k + p] * b[p * 8 + j];
                want[i * 8 + j] = s;
            }
        if (!sanitize::close(k == 8 ? "mma_tf32" : "mma_bf16", d, want, 1e-7)) return false;
    }
    return true;
}

SANITIZE_CASE(block_sum) {
    const int n = 500, threads = 72, blocks = 2;  // 72 threads: two warps and 8 lanes
    const auto x = data(n, 3);
    std::vector<float> sums(blocks, 0.0f);
    if (!sanitize::Launch<&selftest_block_sum>::run(dim3(blocks), dim3(threads), 0, n, x.data(),
                                                    sums.data()))
        return false;
    std::vector<double> want(blocks, 0.0);
    for (int i = 0; i < n; ++i) want[(i % (blocks * threads)) / threads] += x[i];
    return sanitize::close("block_sum", sums, want, 1e-5);  // ~250 f32 additions
}

SANITIZE_CASE(atomics) {
    const int n = 300, bins = 7;  // the last block of 128 is partial
    std::vector<int> keys(n), counts(bins, 0);
    for (int i = 0; i < n; ++i) keys[i] = (i * 5 + 1) % bins;
    const auto vals = data(n, 4);
    std::vector<float> totals(bins, 0.0f);
    int max_key = -1;
    unsigned cas = 0;
    if (!sanitize::Launch<&selftest_atomics>::run(dim3(3), dim3(128), 0, n, keys.data(),
                                                  vals.data(), counts.data(), totals.data(),
                                                  &max_key, &cas))
        return false;
    std::vector<double> want(bins, 0.0);
    std::vector<int> want_counts(bins, 0);
    for (int i = 0; i < n; ++i) {
        want[keys[i]] += vals[i];
        want_counts[keys[i]]++;
    }
    return counts == want_counts && max_key == bins - 1 && cas == (unsigned)n &&
           sanitize::close("atomics", totals, want, 1e-5);
}

SANITIZE_CASE(dynamic_reverse) {
    const int n = 200, threads = 128;  // the second block's last 56 threads exit at once
    const auto x = data(n, 5);
    std::vector<float> y(n, 0.0f);
    if (!sanitize::Launch<&selftest_dynamic_reverse>::run(dim3(2), dim3(threads), threads * 4, n,
                                                          x.data(), y.data()))
        return false;
    std::vector<double> want(n);
    for (int i = 0; i < n; ++i) {
        const int base = i / threads * threads, count = n - base < threads ? n - base : threads;
        want[i] = x[base + count - 1 - (i - base)];
    }
    return sanitize::close("dynamic_reverse", y, want, 0.0);
}

SANITIZE_CASE(shuffles) {
    const int n = 48;  // a full warp and one of 16 lanes
    std::vector<float> out(4 * n, 0.0f);
    std::vector<unsigned> votes(2 * n, 0);
    if (!sanitize::Launch<&selftest_shuffles>::run(dim3(1), dim3(n), 0, 16, out.data(),
                                                   votes.data()))
        return false;
    // Width 16: every source lane lies inside its 16-lane segment, so all are defined.
    std::vector<double> want(4 * n);
    for (int t = 0; t < n; ++t) {
        const int lane = t % 32, seg = lane / 16 * 16, base = t - lane;
        const auto v = [&](int l) { return (double)(base + l) + 0.5; };
        want[t] = v(seg + (7 * lane + 3) % 32 % 16);
        want[n + t] = lane - seg >= 3 ? v(lane - 3) : v(lane);
        want[2 * n + t] = lane - seg + 5 < 16 ? v(lane + 5) : v(lane);
        want[3 * n + t] = (lane ^ 9) / 16 == lane / 16 ? v(lane ^ 9) : v(lane);
        if (votes[n + t] != 16) {  // 0, 3, ..., 45
            fprintf(stderr, "syncthreads_count gave %u\n", votes[n + t]);
            return false;
        }
    }
    return sanitize::close("shuffles", out, want, 0.0);
}
