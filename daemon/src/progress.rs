//! Progress on stderr for long operations (downloads, conversion, hashing).
//! On a terminal a single line is redrawn; otherwise (logs, CI) a line is
//! printed every 10 %, so journals are not flooded.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use hark_models::fetch::FetchProgress;

pub struct StderrProgress {
    tty: bool,
    step: String,
    last_decile: Option<u64>,
    step_started: Instant,
}

impl StderrProgress {
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            step: String::new(),
            last_decile: None,
            step_started: Instant::now(),
        }
    }

    fn end_line(&mut self) {
        if self.tty && self.last_decile.is_some() {
            eprintln!();
        }
    }
}

impl FetchProgress for StderrProgress {
    fn step(&mut self, message: &str) {
        self.end_line();
        self.step = message.to_string();
        self.last_decile = None;
        self.step_started = Instant::now();
        eprintln!("hark: {message}");
    }

    fn bytes(&mut self, done: u64, total: u64) {
        if total == 0 {
            return;
        }
        let percent = done.min(total) * 100 / total;
        let mb = |b: u64| b as f64 / 1e6;
        let rate = mb(done) / self.step_started.elapsed().as_secs_f64().max(1e-3);
        if self.tty {
            eprint!(
                "\r  {percent:3}%  {:.1}/{:.1} MB  {rate:.0} MB/s ",
                mb(done),
                mb(total)
            );
            let _ = std::io::stderr().flush();
            self.last_decile = Some(percent / 10);
        } else if self.last_decile != Some(percent / 10) {
            self.last_decile = Some(percent / 10);
            eprintln!("  {percent:3}%  {:.1}/{:.1} MB", mb(done), mb(total));
        }
    }
}

impl Drop for StderrProgress {
    fn drop(&mut self) {
        self.end_line();
    }
}
