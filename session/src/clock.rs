//! Time, injected: the core reads the clock only through [`Timeline`], so
//! its tests run on a [`ManualClock`] that moves only when told.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of the time.
pub trait Clock: Send + Sync {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now, in ms since the Unix epoch (history timestamps).
    fn unix_ms(&self) -> u64;
}

/// The machine's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that stands still until advanced: time in tests.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    elapsed_ms: AtomicU64,
}

impl ManualClock {
    /// Starts at `base`; its Unix time starts at an arbitrary 1000 s.
    pub fn new(base: Instant) -> Self {
        Self {
            base,
            elapsed_ms: AtomicU64::new(0),
        }
    }

    /// Moves to `ms` after the base (never backwards).
    pub fn set_ms(&self, ms: u64) {
        self.elapsed_ms.fetch_max(ms, Ordering::SeqCst);
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.elapsed_ms.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.elapsed_ms())
    }
    fn unix_ms(&self) -> u64 {
        1_000_000 + self.elapsed_ms()
    }
}

/// The session's one timeline: milliseconds since input sample 0, whose
/// wall time the ears set when the first frame arrives. Everything the
/// core stamps is on it.
#[derive(Clone)]
pub struct Timeline {
    clock: Arc<dyn Clock>,
    origin: Arc<OnceLock<Instant>>,
}

impl Timeline {
    pub fn new(clock: Arc<dyn Clock>, origin: Arc<OnceLock<Instant>>) -> Self {
        Self { clock, origin }
    }

    /// Ms since input sample 0; 0 until the first frame.
    pub fn now_ms(&self) -> u64 {
        self.origin.get().map_or(0, |origin| {
            self.clock
                .now()
                .saturating_duration_since(*origin)
                .as_millis() as u64
        })
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn unix_ms(&self) -> u64 {
        self.clock.unix_ms()
    }
}
