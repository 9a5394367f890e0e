//! Vectors for the CPU kernels, one type per instruction set behind one trait, so that each
//! register-tiled kernel is written once (generic over [`Simd`]) and instantiated for AVX-512,
//! AVX2 with FMA, and a portable fallback, the best the CPU has chosen at run time.
//!
//! A kernel is a generic `#[inline(always)]` function; each instruction set's entry point is a
//! `#[target_feature]` function that calls it with that set's type, so the whole kernel is
//! compiled for those instructions (see [`dispatch!`]). Inside a kernel the vector operations
//! go in loops, not in closures (`array::from_fn(|i| S::load(..))`): a closure is a function of
//! its own, compiled without the set's features, and the operations in it stay calls (that made
//! a cifar step ten times slower). The vector's width (`LANES`) and the
//! register file's size (`REGISTERS`) are constants of the type, and the kernels choose their
//! tile shapes from them. A NEON type (4 lanes, 32 registers) would be one more implementation.
//!
//! `ALEXNET_CPU_ISA=avx512|avx2|portable` holds the kernels to a lower set than the machine's
//! best, so that any machine can test and time every set it can run.

use std::sync::OnceLock;

/// f32 vectors of one instruction set. Every operation is `unsafe`: it needs the set's
/// instructions, which only the set's entry point (`#[target_feature]`) vouches for, and the
/// loads and stores read and write `LANES` floats at a raw pointer.
pub trait Simd: Copy {
    /// f32 lanes of a vector.
    const LANES: usize;
    /// Vector registers the instruction set has.
    const REGISTERS: usize;
    type V: Copy;

    /// # Safety
    /// The instruction set is available.
    unsafe fn zero() -> Self::V;
    /// # Safety
    /// The instruction set is available.
    unsafe fn splat(v: f32) -> Self::V;
    /// # Safety
    /// The instruction set is available; `LANES` floats are readable at `p`.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// The instruction set is available; `LANES` floats are writable at `p`.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// # Safety
    /// The instruction set is available.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// # Safety
    /// The instruction set is available.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// # Safety
    /// The instruction set is available.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`, rounded once.
    ///
    /// # Safety
    /// The instruction set is available.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane by lane `if x > y { a } else { b }`: false where either is NaN, as Rust's `>`.
    ///
    /// # Safety
    /// The instruction set is available.
    unsafe fn select_gt(x: Self::V, y: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// The `2·LANES` floats at `p`, dealt into two vectors: those at even offsets and those at
    /// odd ones, each in order (a stride-2 load, as the pooling windows read).
    ///
    /// # Safety
    /// The instruction set is available; `2·LANES` floats are readable at `p`.
    unsafe fn load_even_odd(p: *const f32) -> (Self::V, Self::V);
    /// Asks for the cache line holding `p` (a hint: `p` need not be readable).
    ///
    /// # Safety
    /// The instruction set is available.
    unsafe fn prefetch(p: *const f32);
}

/// The instruction sets, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The best set this CPU runs.
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// The set `ALEXNET_CPU_ISA` asks for (`None` where it is unset), or why it cannot be had.
    pub fn requested() -> Result<Option<Isa>, String> {
        let Ok(asked) = std::env::var("ALEXNET_CPU_ISA") else {
            return Ok(None);
        };
        let isa = Isa::ALL
            .into_iter()
            .find(|i| i.name() == asked)
            .ok_or_else(|| {
                format!("ALEXNET_CPU_ISA={asked:?}: expected avx512, avx2 or portable")
            })?;
        let best = Isa::best();
        if isa > best {
            return Err(format!(
                "ALEXNET_CPU_ISA={asked}: this CPU's best is {} (the variable can only lower it)",
                best.name()
            ));
        }
        Ok(Some(isa))
    }

    /// The set the kernels use: the best, or the lower one `ALEXNET_CPU_ISA` asks for (a bad
    /// value is reported once and ignored; the CLI refuses it before any work).
    pub fn active() -> Isa {
        static ACTIVE: OnceLock<Isa> = OnceLock::new();
        *ACTIVE.get_or_init(|| match Isa::requested() {
            Ok(asked) => asked.unwrap_or_else(Isa::best),
            Err(why) => {
                eprintln!("warning: {why}; using {}", Isa::best().name());
                Isa::best()
            }
        })
    }
}

/// Whether the vector kernels (written for f32) serve `T` here: `T` is f32 and the active set
/// has vectors with fused multiply-adds (AVX2 or AVX-512).
pub fn vector_f32<T: crate::tensor::Real>() -> bool {
    crate::tensor::as_f32::<T>(&[]).is_some() && Isa::active() >= Isa::Avx2
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Calls `$kernel::<S>($args)` with the active set's vector type `S`, through an entry point
/// compiled for that set; `dispatch!(@isa isa, ...)` with the set `isa` (tests: every set the CPU
/// runs, whatever `ALEXNET_CPU_ISA` says; `isa` must not be above `Isa::best()`).
macro_rules! dispatch {
    ($($kernel:ident)::+ ::<_>($($arg:expr),* $(,)?)) => {
        $crate::ops::simd::dispatch!(@isa $crate::ops::simd::Isa::active(), $($kernel)::+::<_>($($arg),*))
    };
    (@isa $isa:expr, $($kernel:ident)::+ ::<_>($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            use $crate::ops::simd::{Avx2, Avx512};
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            let isa: $crate::ops::simd::Isa = $isa;
            assert!(isa <= $crate::ops::simd::Isa::best(), "{isa} is not on this CPU");
            // (The `unsafe` blocks are redundant where the caller's own block holds this.)
            #[allow(unused_unsafe)]
            let out = match isa {
                // SAFETY: not above what the CPU has (asserted).
                $crate::ops::simd::Isa::Avx512 => unsafe {
                    avx512(#[inline(always)] || $($kernel)::+::<Avx512>($($arg),*))
                },
                $crate::ops::simd::Isa::Avx2 => unsafe { avx2(#[inline(always)] || $($kernel)::+::<Avx2>($($arg),*)) },
                $crate::ops::simd::Isa::Portable => {
                    $($kernel)::+::<$crate::ops::simd::Portable>($($arg),*)
                }
            };
            out
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $($kernel)::+::<$crate::ops::simd::Portable>($($arg),*)
        }
    }};
}
pub(crate) use dispatch;

/// Fused multiply-adds at the active set's peak, for benchmarks' "% of peak": 12 independent
/// chains of vectors (enough to cover the latency on two FMA ports), `iters` steps each.
/// Returns the flops done and a sum that keeps the chains alive.
pub fn fma_chains(seed: f32, iters: usize) -> (f64, f32) {
    #[inline(always)]
    fn chains<S: Simd>(seed: f32, iters: usize) -> (f64, f32) {
        // SAFETY: called through `dispatch!`'s entry points; `lanes` holds 16 floats.
        unsafe {
            let mut acc = [S::splat(seed); 12];
            let (m, a) = (S::splat(0.999_999), S::splat(1e-7));
            for _ in 0..iters {
                for v in acc.iter_mut() {
                    *v = S::fmadd(*v, m, a);
                }
            }
            let mut lanes = [0f32; 16];
            let mut sum = 0.0;
            for v in acc {
                S::store(lanes.as_mut_ptr(), v);
                sum += lanes[..S::LANES].iter().sum::<f32>();
            }
            ((iters * 12 * S::LANES * 2) as f64, sum)
        }
    }
    dispatch!(chains::<_>(seed, iters))
}

/// AVX-512F: 16 lanes, 32 registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    const LANES: usize = 16;
    const REGISTERS: usize = 32;
    type V = std::arch::x86_64::__m512;

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        unsafe { std::arch::x86_64::_mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { std::arch::x86_64::_mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn select_gt(x: Self::V, y: Self::V, a: Self::V, b: Self::V) -> Self::V {
        use std::arch::x86_64::{_CMP_GT_OQ, _mm512_cmp_ps_mask, _mm512_mask_blend_ps};
        // The blend takes its second operand where the mask is set.
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, y), b, a) }
    }
    #[inline(always)]
    unsafe fn load_even_odd(p: *const f32) -> (Self::V, Self::V) {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_permutex2var_ps, _mm512_setr_epi32};
        // Indices 0..15 pick from the first operand, 16..31 from the second.
        unsafe {
            let (lo, hi) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (
                _mm512_permutex2var_ps(lo, even, hi),
                _mm512_permutex2var_ps(lo, odd, hi),
            )
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

/// AVX2 with FMA: 8 lanes, 16 registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    const LANES: usize = 8;
    const REGISTERS: usize = 16;
    type V = std::arch::x86_64::__m256;

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        unsafe { std::arch::x86_64::_mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { std::arch::x86_64::_mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn select_gt(x: Self::V, y: Self::V, a: Self::V, b: Self::V) -> Self::V {
        use std::arch::x86_64::{_CMP_GT_OQ, _mm256_blendv_ps, _mm256_cmp_ps};
        // The blend takes its second operand where the mask is set.
        unsafe { _mm256_blendv_ps(b, a, _mm256_cmp_ps::<_CMP_GT_OQ>(x, y)) }
    }
    #[inline(always)]
    unsafe fn load_even_odd(p: *const f32) -> (Self::V, Self::V) {
        use std::arch::x86_64::{
            _mm256_castpd_ps, _mm256_castps_pd, _mm256_loadu_ps, _mm256_permute4x64_pd,
            _mm256_shuffle_ps,
        };
        unsafe {
            let (lo, hi) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            // Within each 128-bit half: [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6] (and the odd ones);
            // then the 64-bit pairs in the order 0, 2, 1, 3.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
            let order =
                |v| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            (order(even), order(odd))
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

/// Plain arrays of 8 lanes, fused multiply-adds by `f32::mul_add` (correctly rounded on every
/// CPU): any machine, at the compiler's pace.
#[derive(Clone, Copy)]
pub struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    const REGISTERS: usize = 16;
    type V = [f32; 8];

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        [v; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l] + b[l])
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l] - b[l])
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l] * b[l])
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l].mul_add(b[l], c[l]))
    }
    #[inline(always)]
    unsafe fn select_gt(x: Self::V, y: Self::V, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| if x[l] > y[l] { a[l] } else { b[l] })
    }
    #[inline(always)]
    unsafe fn load_even_odd(p: *const f32) -> (Self::V, Self::V) {
        let both = unsafe { p.cast::<[f32; 16]>().read_unaligned() };
        (
            std::array::from_fn(|l| both[2 * l]),
            std::array::from_fn(|l| both[2 * l + 1]),
        )
    }
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each operation of `S` on two vectors of distinct values, lane by lane: zero, splat, load,
    /// add, sub, mul, fmadd, select_gt, load_even_odd (of a then b), stored back.
    #[inline(always)]
    fn each_op<S: Simd>(
        a: &[f32; 16],
        b: &[f32; 16],
        c: &[f32; 16],
        d: &[f32; 16],
    ) -> Vec<[f32; 16]> {
        let ab: Vec<f32> = a.iter().chain(b).copied().collect();
        let mut out = vec![[0f32; 16]; 10];
        // SAFETY: called through `dispatch!`'s entry points; 16 floats at every pointer.
        unsafe {
            let (va, vb, vc) = (
                S::load(a.as_ptr()),
                S::load(b.as_ptr()),
                S::load(c.as_ptr()),
            );
            let results = [
                S::zero(),
                S::splat(a[3]),
                va,
                S::add(va, vb),
                S::sub(va, vb),
                S::mul(va, vb),
                S::fmadd(va, vb, vc),
                S::select_gt(S::load(d.as_ptr()), vb, va, vb),
                S::load_even_odd(ab.as_ptr()).0,
                S::load_even_odd(ab.as_ptr()).1,
            ];
            for (o, r) in out.iter_mut().zip(results) {
                S::store(o.as_mut_ptr(), r);
                S::prefetch(a.as_ptr());
            }
        }
        out
    }

    #[test]
    fn every_set_the_cpu_runs_computes_each_operation_exactly() {
        let a: [f32; 16] = std::array::from_fn(|i| 1.0 + i as f32 / 3.0);
        let b: [f32; 16] = std::array::from_fn(|i| 0.5 - i as f32 / 7.0);
        let c: [f32; 16] = std::array::from_fn(|i| (i as f32).sqrt() - 2.0);
        // For select_gt against b: a tie in lane 2 (keeps b) and a NaN in lane 5 (never greater).
        let mut d = c;
        (d[2], d[5]) = (b[2], f32::NAN);
        let ran: Vec<Isa> = Isa::ALL.into_iter().filter(|&i| i <= Isa::best()).collect();
        for isa in &ran {
            let got = dispatch!(@isa *isa, each_op::<_>(&a, &b, &c, &d));
            let lanes = match isa {
                Isa::Avx512 => 16,
                _ => 8,
            };
            let ab: Vec<f32> = a.iter().chain(&b).copied().collect();
            let want: [Box<dyn Fn(usize) -> f32>; 10] = [
                Box::new(|_| 0.0),
                Box::new(|_| a[3]),
                Box::new(|l| a[l]),
                Box::new(|l| a[l] + b[l]),
                Box::new(|l| a[l] - b[l]),
                Box::new(|l| a[l] * b[l]),
                Box::new(|l| a[l].mul_add(b[l], c[l])),
                Box::new(|l| if d[l] > b[l] { a[l] } else { b[l] }),
                Box::new(|l| ab[2 * l]),
                Box::new(|l| ab[2 * l + 1]),
            ];
            for (op, (g, w)) in got.iter().zip(&want).enumerate() {
                for l in 0..16 {
                    let expected = if l < lanes { w(l) } else { 0.0 };
                    assert_eq!(g[l].to_bits(), expected.to_bits(), "{isa} op {op} lane {l}");
                }
            }
        }
        assert!(ran.contains(&Isa::Portable));
    }

    #[test]
    fn the_variable_names_a_set_and_cannot_raise_it() {
        assert_eq!(Isa::best().max(Isa::Portable), Isa::best());
        assert!(Isa::active() <= Isa::best());
        assert_eq!(
            Isa::ALL.map(Isa::name),
            ["portable", "avx2", "avx512"],
            "the names ALEXNET_CPU_ISA takes"
        );
    }
}
