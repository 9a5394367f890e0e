//! Progress of long work over many files (statistics over a training set): a bar with the count,
//! rate and ETA on a terminal, else a plain line every few seconds, so a log shows the work is
//! alive. It also carries the interruption flag, so that work can stop early when asked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the plain-line form prints.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    label: String,
    /// What is counted ("files", "images", "rows").
    unit: &'static str,
    total: u64,
    done: AtomicU64,
    started: Instant,
    shown: Display,
    stop: Option<Arc<AtomicBool>>,
}

enum Display {
    Hidden,
    Bar(indicatif::ProgressBar),
    /// When the last line was printed.
    Lines(Mutex<Instant>),
}

impl Progress {
    /// Nothing shown, nothing to interrupt it (library callers and tests).
    pub fn hidden() -> Progress {
        Self::with(String::new(), 0, Display::Hidden)
    }

    /// Progress of `total` items of `label` ("statistics of imagenet/train"), as a bar when
    /// standard error is a terminal and `bar` allows it, else as lines.
    pub fn new(label: impl Into<String>, total: u64, bar: bool) -> Progress {
        let shown = if bar && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let b = indicatif::ProgressBar::new(total);
            Display::Bar(b)
        } else {
            Display::Lines(Mutex::new(Instant::now()))
        };
        let p = Self::with(label.into(), total, shown);
        if let Display::Bar(b) = &p.shown {
            b.set_message(p.label.clone());
        }
        p.counting("files")
    }

    /// Counts `unit` ("images", "rows") instead of files.
    pub fn counting(mut self, unit: &'static str) -> Progress {
        self.unit = unit;
        if let Display::Bar(b) = &self.shown {
            let template = format!(
                "{{msg}} {{bar:30}} {{pos}}/{{len}} {unit} {{per_sec}} [{{elapsed_precise}} < {{eta_precise}}]"
            );
            b.set_style(
                indicatif::ProgressStyle::with_template(&template).expect("a valid template"),
            );
        }
        self
    }

    fn with(label: String, total: u64, shown: Display) -> Progress {
        Progress {
            label,
            unit: "files",
            total,
            done: AtomicU64::new(0),
            started: Instant::now(),
            shown,
            stop: None,
        }
    }

    /// Lets `flag` (set by Ctrl-C or SIGTERM) interrupt the work.
    pub fn interruptible(mut self, flag: Arc<AtomicBool>) -> Progress {
        self.stop = Some(flag);
        self
    }

    /// Whether the work was asked to stop.
    pub fn interrupted(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// One more item done (from any thread).
    pub fn inc(&self) {
        self.inc_by(1)
    }

    /// `n` more items done (from any thread).
    pub fn inc_by(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.shown {
            Display::Hidden => {}
            Display::Bar(b) => b.inc(n),
            Display::Lines(last) => {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    eprintln!("{}", self.line(done));
                }
            }
        }
    }

    /// `label: done/total <unit> (percent), rate, ETA`.
    fn line(&self, done: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let unit = self.unit;
        let left = self.total.saturating_sub(done) as f64 / rate.max(1e-9);
        format!(
            "{}: {done}/{} {unit} ({:.0}%), {rate:.0} {unit}/s, about {:.0} s left",
            self.label,
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64,
            left
        )
    }

    /// Clears the bar (lines need nothing).
    pub fn finish(&self) {
        if let Display::Bar(b) = &self.shown {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_count_rate_and_time_left_and_the_flag_interrupts() {
        let p = Progress::new("statistics of x", 200, false);
        for _ in 0..50 {
            p.inc();
        }
        let line = p.line(50);
        assert!(
            line.starts_with("statistics of x: 50/200 files (25%), "),
            "{line}"
        );
        assert!(
            line.contains("files/s, about") && line.ends_with("s left"),
            "{line}"
        );
        let flag = Arc::new(AtomicBool::new(false));
        let p = p.interruptible(flag.clone());
        assert!(!p.interrupted());
        flag.store(true, Ordering::SeqCst);
        assert!(p.interrupted());
    }
}
