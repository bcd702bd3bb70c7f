//! A one-line progress bar on stderr: `[####......] 120/400 records, 35.2/s, ETA 8s`.

use std::io::Write;
use std::time::Instant;

pub struct Progress {
    total: usize,
    done: usize,
    unit: &'static str,
    start: Instant,
    visible: bool,
}

impl Progress {
    /// `visible` false makes every call a no-op (single inputs need no bar).
    pub fn new(total: usize, unit: &'static str, visible: bool) -> Self {
        Progress { total, done: 0, unit, start: Instant::now(), visible }
    }

    pub fn advance(&mut self, n: usize) {
        self.done = (self.done + n).min(self.total);
        if !self.visible || self.total == 0 {
            return;
        }
        let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let eta = (self.total - self.done) as f64 / rate.max(1e-9);
        let filled = self.done * 30 / self.total;
        eprint!(
            "\r[{}{}] {}/{} {}, {rate:.1}/s, ETA {eta:.0}s ",
            "#".repeat(filled),
            ".".repeat(30 - filled),
            self.done,
            self.total,
            self.unit
        );
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        if self.visible && self.total > 0 {
            eprintln!();
        }
    }
}
