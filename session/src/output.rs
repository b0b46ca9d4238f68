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
//!
//! A companion app (smart glasses that play sound themselves) may borrow
//! the voice with `OpenAudioOutput`: while its stream is open the voice is
//! encoded into it ([`ExternalOutput`]) at the speaker's real-time pace,
//! the speaker plays silence (so its timeline, and the echo canceller's
//! reference, go on unbroken), and when the app closes its end, or stops
//! reading for [`LENT_STALL`], the voice is the speaker's again.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hark_audio::codec::encode::{encoder, StreamEncoder};
use hark_audio::resample::Resampler;
use hark_audio::stream::StreamFormat;
use hark_audio::AudioError;

use crate::speaker::{DeviceSink, SpeakerSink};

/// How often a missing speaker is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// The stream's rate when there is no device to take it from at start.
const NO_DEVICE_RATE: u32 = 48_000;

/// Audio a companion may leave unread before its stream is given up.
pub const LENT_STALL: Duration = Duration::from_secs(2);

/// A stream opened with `OpenAudioOutput`, to carry Hark's voice.
#[derive(Debug)]
pub struct ExternalOutput {
    /// Hark's end of the socket pair; the caller reads the other.
    pub stream: UnixStream,
    pub format: StreamFormat,
    /// Who asked for it ("stream to :1.42").
    pub label: String,
}

/// Where `OpenAudioOutput` leaves a stream for the speaker to pick up;
/// shared by the core (which attaches) and [`ReconnectingSink`] (which
/// takes, and releases when the stream ends).
#[derive(Debug, Default)]
pub struct OutputSwitch {
    slot: Mutex<OutputSlot>,
}

#[derive(Debug, Default)]
struct OutputSlot {
    pending: Option<ExternalOutput>,
    /// A stream is pending or carrying the voice.
    busy: bool,
}

impl OutputSwitch {
    fn slot(&self) -> std::sync::MutexGuard<'_, OutputSlot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `output` to carry the voice instead of the speaker. One
    /// stream at a time: the current one must be closed first.
    pub fn attach(&self, output: ExternalOutput) -> Result<(), String> {
        let mut slot = self.slot();
        if slot.busy {
            return Err("another app already takes Hark's voice; \
                 it must close its file descriptor first"
                .into());
        }
        slot.busy = true;
        slot.pending = Some(output);
        Ok(())
    }

    fn take(&self) -> Option<ExternalOutput> {
        self.slot().pending.take()
    }

    fn release(&self) {
        self.slot().busy = false;
    }
}

/// The voice on its way into an [`ExternalOutput`].
struct Lent {
    label: String,
    stream: UnixStream,
    encoder: Box<dyn StreamEncoder>,
    /// From the speaker's rate to the format's (`None`: the same).
    resampler: Option<Resampler>,
    resampled: Vec<f32>,
    /// Encoded and not yet taken by the reader (a packet's start may have
    /// gone already: nothing is dropped from here, or the framing breaks).
    unsent: Vec<u8>,
    /// `unsent` past this many bytes: the reader has stalled.
    stall_bytes: usize,
}

impl Lent {
    fn open(output: ExternalOutput, rate: u32) -> Result<Self, String> {
        let encoder = encoder(output.format).map_err(|e| e.to_string())?;
        let resampler = if encoder.rate() == rate {
            None
        } else {
            Some(Resampler::with_output_rate(rate, 1, encoder.rate()).map_err(|e| e.to_string())?)
        };
        output
            .stream
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        // Sized from the rawest format this rate allows: 32-bit samples
        // on 8 channels, as a ceiling for anything encoded.
        let stall_bytes = (LENT_STALL.as_secs_f64() * encoder.rate() as f64 * 32.0) as usize;
        Ok(Self {
            label: output.label,
            stream: output.stream,
            encoder,
            resampler,
            resampled: Vec::new(),
            unsent: Vec::new(),
            stall_bytes,
        })
    }

    /// Encodes `samples` and sends what the reader will take; an error
    /// once the reader is gone or has stalled.
    fn send(&mut self, samples: &[f32]) -> Result<(), String> {
        let samples = match &mut self.resampler {
            None => samples,
            Some(resampler) => {
                self.resampled.clear();
                resampler
                    .process(samples, &mut self.resampled)
                    .map_err(|e| e.to_string())?;
                &self.resampled
            }
        };
        self.encoder.encode(samples, &mut self.unsent);
        while !self.unsent.is_empty() {
            match self.stream.write(&self.unsent) {
                Ok(0) => return Err("the reader closed it".into()),
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("the reader closed it ({e})")),
            }
        }
        if self.unsent.len() > self.stall_bytes {
            return Err(format!(
                "the reader has taken nothing for {} s",
                LENT_STALL.as_secs()
            ));
        }
        Ok(())
    }
}

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
    /// Where `OpenAudioOutput` streams arrive; `None`: never lent.
    switch: Option<Arc<OutputSwitch>>,
    lent: Option<Lent>,
    /// Silence for the speaker while the voice is lent.
    zeros: Vec<f32>,
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
            switch: None,
            lent: None,
            zeros: Vec::new(),
        }
    }

    /// Lends the voice to the streams `switch` hands over.
    pub fn with_switch(mut self, switch: Arc<OutputSwitch>) -> Self {
        self.switch = Some(switch);
        self
    }

    /// Picks up a stream `OpenAudioOutput` left.
    fn poll_switch(&mut self) {
        let Some(output) = self.switch.as_ref().and_then(|s| s.take()) else {
            return;
        };
        let label = output.label.clone();
        match Lent::open(output, self.rate) {
            Ok(lent) => {
                tracing::info!(stream = %label, "the voice goes to a stream");
                (self.on_change)(format!("external: {label}"), None);
                self.lent = Some(lent);
            }
            Err(why) => {
                tracing::warn!(stream = %label, "cannot lend the voice: {why}");
                self.end_lent();
            }
        }
    }

    /// The stream is over: the voice is the speaker's again.
    fn end_lent(&mut self) {
        self.lent = None;
        if let Some(switch) = &self.switch {
            switch.release();
        }
        let (name, problem) = match &self.attached {
            Some(attached) => (attached.sink.name().to_owned(), None),
            None => (
                "none".to_owned(),
                Some(format!(
                    "no speaker ({}); replies go out as text only, trying again every {} s",
                    self.device_name.as_deref().unwrap_or("default"),
                    RETRY.as_secs()
                )),
            ),
        };
        (self.on_change)(name, problem);
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

    /// Writes to the speaker, or keeps time silently without one.
    fn write_local(&mut self, samples: &[f32]) -> Result<(), AudioError> {
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
        self.poll_switch();
        if let Some(lent) = &mut self.lent {
            match lent.send(samples) {
                Ok(()) => {
                    // The speaker plays silence meanwhile: its timeline and
                    // the echo reference go on.
                    let mut zeros = std::mem::take(&mut self.zeros);
                    zeros.clear();
                    zeros.resize(samples.len(), 0.0);
                    let written = self.write_local(&zeros);
                    self.zeros = zeros;
                    return written;
                }
                Err(why) => {
                    tracing::info!(stream = %lent.label, "the voice is the speaker's again: {why}");
                    self.end_lent();
                }
            }
        }
        self.write_local(samples)
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
