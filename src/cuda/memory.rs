//! Bytes the CUDA launchers hold on each GPU, now and at the peak, so training and benchmarks can
//! report what a run needed. Counted at our allocation wrapper (`CudaLauncher::alloc`), so it is
//! what this process asked for — not the driver's pool, which may keep freed memory cached.
//! The counters live for the whole process, so the peak survives the network that made it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Current and peak bytes of one GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub current: usize,
    pub peak: usize,
}

#[derive(Debug, Default)]
pub struct Counter {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl Counter {
    pub fn add(&self, bytes: usize) {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: usize) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            current: self.current.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
        }
    }

    /// Starts a new peak from what is held now (e.g. between benchmark cases).
    pub fn reset_peak(&self) {
        self.peak
            .store(self.current.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

fn counters() -> &'static Mutex<BTreeMap<usize, Arc<Counter>>> {
    static COUNTERS: OnceLock<Mutex<BTreeMap<usize, Arc<Counter>>>> = OnceLock::new();
    COUNTERS.get_or_init(Default::default)
}

/// The counter of GPU `ordinal` (created at zero on first use).
pub fn counter(ordinal: usize) -> Arc<Counter> {
    counters()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(ordinal)
        .or_default()
        .clone()
}

/// Every GPU this process has allocated on, by ordinal.
pub fn all() -> Vec<(usize, MemoryStats)> {
    counters()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(&o, c)| (o, c.stats()))
        .collect()
}

/// One line per GPU: `cuda:0 peak 1.51 GB (now 1.20 GB)`; empty when nothing was allocated.
pub fn summary() -> String {
    all()
        .into_iter()
        .map(|(o, s)| {
            format!(
                "cuda:{o} peak {} (now {})\n",
                super::driver::gb(s.peak),
                super::driver::gb(s.current)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_high_water_mark_and_resets_to_the_current_use() {
        let c = Counter::default();
        c.add(100);
        c.add(50);
        c.sub(100);
        c.add(20);
        assert_eq!(
            c.stats(),
            MemoryStats {
                current: 70,
                peak: 150
            }
        );
        c.reset_peak();
        assert_eq!(c.stats().peak, 70);
        c.add(1);
        assert_eq!(c.stats().peak, 71);
    }

    #[test]
    fn counters_are_per_gpu_and_shared_by_ordinal() {
        // Ordinals far above any real machine's, so GPU tests running alongside do not interfere.
        let (a, b) = (counter(1000), counter(1001));
        a.add(8);
        assert!(Arc::ptr_eq(&a, &counter(1000)));
        assert_eq!(b.stats().current, 0);
        assert!(all().iter().any(|&(o, s)| o == 1000 && s.current == 8));
        a.sub(8);
    }
}
