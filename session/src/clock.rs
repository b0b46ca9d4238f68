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
    /// Blocks until this clock reads `due` (at once if it already does).
    fn sleep_until(&self, due: Instant) {
        if let Some(wait) = due.checked_duration_since(self.now()) {
            std::thread::sleep(wait);
        }
    }
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

/// Time running `speed` times faster than the machine's, from the moment
/// it was made: `hark bench soak` plays hours of audio through the whole
/// pipeline in less, with every paced part (the scripted input, the
/// clocked output file, the core's timeline) on this clock. Inference
/// still takes real time, so on this clock it looks `speed` times slower.
/// Devices and echo cancellation keep the machine's clock.
#[derive(Debug)]
pub struct ScaledClock {
    start: Instant,
    speed: f64,
}

impl ScaledClock {
    pub fn new(speed: f64) -> Self {
        assert!(speed > 0.0, "a clock must move forwards");
        Self {
            start: Instant::now(),
            speed,
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Instant {
        self.start + self.start.elapsed().mul_f64(self.speed)
    }
    fn unix_ms(&self) -> u64 {
        SystemClock.unix_ms()
    }
    fn sleep_until(&self, due: Instant) {
        if let Some(wait) = due.checked_duration_since(self.now()) {
            std::thread::sleep(wait.div_f64(self.speed));
        }
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

    /// Time since input sample 0; `None` until the first frame.
    pub fn elapsed(&self) -> Option<Duration> {
        let origin = self.origin.get()?;
        Some(self.clock.now().saturating_duration_since(*origin))
    }

    /// Sets input sample 0 (once) to `age` before now: a frame holding
    /// `age` of audio has just arrived. Returns sample 0's time.
    pub fn start(&self, age: Duration) -> Instant {
        *self.origin.get_or_init(|| {
            let now = self.clock.now();
            now.checked_sub(age).unwrap_or(now)
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn unix_ms(&self) -> u64 {
        self.clock.unix_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_runs_faster_and_sleeps_shorter() {
        let clock = ScaledClock::new(10.0);
        let before = clock.now();
        let real = Instant::now();
        clock.sleep_until(before + Duration::from_millis(500));
        let slept = real.elapsed();
        assert!(clock.now() >= before + Duration::from_millis(500));
        assert!(slept < Duration::from_millis(250), "{slept:?}");
    }

    #[test]
    fn the_timeline_starts_once_at_the_first_frames_age() {
        let clock = Arc::new(ManualClock::new(Instant::now()));
        clock.set_ms(5_000);
        let timeline = Timeline::new(clock.clone(), Arc::new(OnceLock::new()));
        assert_eq!(timeline.elapsed(), None);
        let zero = timeline.start(Duration::from_millis(30));
        assert_eq!(timeline.now_ms(), 30);
        clock.set_ms(6_000);
        assert_eq!(timeline.start(Duration::from_millis(500)), zero);
        assert_eq!(timeline.elapsed(), Some(Duration::from_millis(1030)));
    }
}
