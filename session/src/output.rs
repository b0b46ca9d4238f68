//! The speaker that is not always there: a playback device that may be
//! missing at start, or lost mid-reply (the audio server killed, the
//! device unplugged), behind a [`SpeakerSink`] that never fails.
//!
//! While there is no device the stream keeps its real-time pace into a
//! silent clock, so replies still take their time, finish, and go out as
//! text; every [`RETRY`] the device is tried again, and once it opens the
//! stream continues on it. The stream's rate is fixed for the session (the
//! voice is resampled to it upstream); a device of another rate gets the
//! stream resampled here.

use std::time::{Duration, Instant};

use hark_audio::resample::Resampler;
use hark_audio::AudioError;

use crate::speaker::{DeviceSink, SpeakerSink};

/// How often a missing speaker is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// The stream's rate when there is no device to take it from at start.
const NO_DEVICE_RATE: u32 = 48_000;

/// What the sink tells the core when its device comes or goes: the
/// device's name (`none` without one) and, without one, why.
pub type OnOutputChange = Box<dyn FnMut(String, Option<String>) + Send>;

/// See the module documentation.
pub struct ReconnectingSink {
    /// The configured device (`None`: the default).
    device_name: Option<String>,
    rate: u32,
    attached: Option<Attached>,
    silent: SilentClock,
    next_try: Instant,
    /// Gaps of devices since detached, at the stream's rate.
    gaps_before: u64,
    on_change: OnOutputChange,
}

/// An open device and the conversions to and from its rate.
struct Attached {
    sink: DeviceSink,
    /// `None` when the device runs at the stream's rate.
    rates: Option<RateBridge>,
}

struct RateBridge {
    to_device: Resampler,
    from_device: Resampler,
    /// Stream samples per device sample.
    ratio: f64,
    scratch: Vec<f32>,
}

/// Real time, kept by nobody: how much audio a speaker would have taken.
#[derive(Default)]
struct SilentClock {
    origin: Option<Instant>,
    written: u64,
    /// Written and not yet reported as heard (as silence: nobody heard it).
    unheard: usize,
}

impl SilentClock {
    fn wanted(&mut self, rate: u32) -> usize {
        let origin = *self.origin.get_or_insert_with(Instant::now);
        let due = (origin.elapsed().as_secs_f64() * rate as f64) as u64;
        due.saturating_sub(self.written) as usize
    }

    fn write(&mut self, n: usize) {
        self.written += n as u64;
        self.unheard += n;
    }
}

impl ReconnectingSink {
    /// Opens `device_name` (or the default device); without it, starts
    /// silent. `on_change` hears of the first outcome at once.
    pub fn open(device_name: Option<&str>, mut on_change: OnOutputChange) -> Self {
        let (attached, rate) = match DeviceSink::open(device_name) {
            Ok(sink) => {
                tracing::info!(device = sink.name(), "speaking on");
                on_change(sink.name().to_owned(), None);
                let rate = sink.rate();
                (Some(Attached { sink, rates: None }), rate)
            }
            Err(e) => {
                let why = missing(device_name, &e);
                tracing::warn!("{why}");
                on_change("none".into(), Some(why));
                (None, NO_DEVICE_RATE)
            }
        };
        Self {
            device_name: device_name.map(str::to_owned),
            rate,
            attached,
            silent: SilentClock::default(),
            next_try: Instant::now() + RETRY,
            gaps_before: 0,
            on_change,
        }
    }

    /// The device's name, or `none`.
    pub fn name(&self) -> &str {
        self.attached.as_ref().map_or("none", |a| a.sink.name())
    }

    fn try_attach(&mut self) {
        if Instant::now() < self.next_try {
            return;
        }
        self.next_try = Instant::now() + RETRY;
        let Ok(sink) = DeviceSink::open(self.device_name.as_deref()) else {
            return;
        };
        let rates = if sink.rate() == self.rate {
            None
        } else {
            match (
                Resampler::with_output_rate(self.rate, 1, sink.rate()),
                Resampler::with_output_rate(sink.rate(), 1, self.rate),
            ) {
                (Ok(to_device), Ok(from_device)) => Some(RateBridge {
                    to_device,
                    from_device,
                    ratio: self.rate as f64 / sink.rate() as f64,
                    scratch: Vec::new(),
                }),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(device = sink.name(), "cannot resample for the speaker: {e}");
                    return;
                }
            }
        };
        tracing::info!(device = sink.name(), "speaker back: speaking on");
        (self.on_change)(sink.name().to_owned(), None);
        self.attached = Some(Attached { sink, rates });
    }

    /// The device failed: go on silently, and look for it again.
    fn detach(&mut self, error: &AudioError) {
        if let Some(attached) = self.attached.take() {
            self.gaps_before += to_stream(&attached, attached.sink.gaps());
            let why = format!(
                "speaker {} lost: {error}; replies go on as text, trying again every {} s",
                attached.sink.name(),
                RETRY.as_secs()
            );
            tracing::warn!("{why}");
            (self.on_change)("none".into(), Some(why));
        }
        self.silent = SilentClock::default();
        self.next_try = Instant::now() + RETRY;
    }
}

/// Why there is no speaker, and what Hark does about it.
fn missing(device_name: Option<&str>, error: &AudioError) -> String {
    format!(
        "no speaker ({}): {error}; replies go out as text only, trying again every {} s",
        device_name.unwrap_or("default"),
        RETRY.as_secs()
    )
}

/// `n` device samples in stream samples.
fn to_stream(attached: &Attached, n: u64) -> u64 {
    match &attached.rates {
        None => n,
        Some(bridge) => (n as f64 * bridge.ratio) as u64,
    }
}

impl SpeakerSink for ReconnectingSink {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn wanted(&mut self) -> usize {
        // A dead stream asks for nothing (its queue never drains): find out
        // here, not only when a write fails.
        if let Some(Err(e)) = self.attached.as_ref().map(|a| a.sink.health()) {
            self.detach(&e);
        }
        if self.attached.is_none() {
            self.try_attach();
        }
        match &mut self.attached {
            Some(attached) => {
                let wanted = attached.sink.wanted() as u64;
                to_stream(attached, wanted) as usize
            }
            None => self.silent.wanted(self.rate),
        }
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        let Some(attached) = &mut self.attached else {
            self.silent.write(samples.len());
            return Ok(());
        };
        let written = match &mut attached.rates {
            None => attached.sink.write(samples),
            Some(bridge) => {
                bridge.scratch.clear();
                bridge
                    .to_device
                    .process(samples, &mut bridge.scratch)
                    .and_then(|()| attached.sink.write(&bridge.scratch))
            }
        };
        if let Err(e) = written {
            self.detach(&e);
            self.silent.write(samples.len());
        }
        Ok(())
    }

    fn queued(&self) -> usize {
        self.attached
            .as_ref()
            .map_or(0, |a| to_stream(a, a.sink.queued() as u64) as usize)
    }

    fn discard(&mut self) {
        if let Some(attached) = &mut self.attached {
            attached.sink.discard();
        }
    }

    fn gaps(&self) -> u64 {
        self.gaps_before
            + self
                .attached
                .as_ref()
                .map_or(0, |a| to_stream(a, a.sink.gaps()))
    }

    fn take_heard(&mut self, out: &mut Vec<f32>) {
        match &mut self.attached {
            Some(Attached { sink, rates: None }) => sink.take_heard(out),
            Some(Attached {
                sink,
                rates: Some(bridge),
            }) => {
                bridge.scratch.clear();
                sink.take_heard(&mut bridge.scratch);
                let heard = std::mem::take(&mut bridge.scratch);
                let _ = bridge.from_device.process(&heard, out);
                bridge.scratch = heard;
            }
            None => {
                out.resize(out.len() + self.silent.unheard, 0.0);
                self.silent.unheard = 0;
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<(), AudioError> {
        match self.attached {
            Some(attached) => Box::new(attached.sink).finish(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_device_the_stream_keeps_real_time_and_is_heard_as_silence() {
        let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = changes.clone();
        let mut sink = ReconnectingSink::open(
            Some("hark-test-no-such-speaker"),
            Box::new(move |name, why| seen.lock().unwrap().push((name, why))),
        );
        assert_eq!(sink.name(), "none");
        let changes = changes.lock().unwrap().clone();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, "none");
        let why = changes[0].1.as_deref().unwrap();
        assert!(
            why.contains("hark-test-no-such-speaker") && why.contains("as text"),
            "{why}"
        );

        assert_eq!(sink.rate(), NO_DEVICE_RATE);
        let _ = sink.wanted(); // starts the clock
        std::thread::sleep(Duration::from_millis(100));
        let wanted = sink.wanted();
        // 100 ms at 48 kHz, give or take a slow machine.
        assert!((4_000..20_000).contains(&wanted), "{wanted}");
        sink.write(&vec![0.5; wanted]).unwrap();
        assert!(sink.wanted() < 1_000);
        assert_eq!(sink.queued(), 0);
        let mut heard = Vec::new();
        sink.take_heard(&mut heard);
        assert_eq!(heard.len(), wanted);
        assert!(heard.iter().all(|&s| s == 0.0), "nobody heard it");
        assert_eq!(sink.gaps(), 0);
    }
}
