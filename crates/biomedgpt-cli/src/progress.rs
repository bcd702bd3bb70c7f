//! A progress line on stderr: `[####......] 120/400 records, 35.2/s, ETA 8s`. Redrawn in place
//! at most 5 times a second on a terminal; elsewhere (logs, CI) one line per 10% of the work.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    total: usize,
    done: usize,
    unit: &'static str,
    start: Instant,
    last_draw: Option<Instant>,
    last_decile: usize,
    visible: bool,
    terminal: bool,
    /// Units already done when this bar started (a resumed run): not counted in the rate.
    initial: usize,
    note: String,
}

impl Progress {
    /// `visible` false makes every call a no-op (single inputs need no bar).
    pub fn new(total: usize, unit: &'static str, visible: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        Progress { total, done: 0, unit, start: Instant::now(), last_draw: None, last_decile: 0, visible, terminal, initial: 0, note: String::new() }
    }

    /// A bar whose first `done` units were done before (rate and ETA count the rest).
    pub fn starting_at(mut self, done: usize) -> Self {
        self.done = done.min(self.total);
        self.initial = self.done;
        self.last_decile = self.done * 10 / self.total.max(1);
        self
    }

    /// Text shown after the counts (e.g. the current loss).
    pub fn set_note(&mut self, note: String) {
        self.note = note;
    }

    pub fn advance(&mut self, n: usize) {
        self.done = (self.done + n).min(self.total);
        if !self.visible || self.total == 0 {
            return;
        }
        let finished = self.done == self.total;
        if self.terminal {
            if !finished && self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) {
                return;
            }
        } else {
            let decile = self.done * 10 / self.total;
            if decile == self.last_decile && !finished {
                return;
            }
            self.last_decile = decile;
        }
        self.last_draw = Some(Instant::now());
        let rate = (self.done - self.initial) as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let eta = (self.total - self.done) as f64 / rate.max(1e-9);
        let filled = self.done * 30 / self.total;
        let note = if self.note.is_empty() { String::new() } else { format!(", {}", self.note) };
        let line = format!(
            "[{}{}] {}/{} {}, {rate:.1}/s, ETA {eta:.0}s{note} ",
            "#".repeat(filled),
            ".".repeat(30 - filled),
            self.done,
            self.total,
            self.unit
        );
        if self.terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        if self.visible && self.total > 0 && self.terminal {
            eprintln!();
        }
    }
}
