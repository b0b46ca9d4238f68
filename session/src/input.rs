//! The daemon's ears: its own microphone, or a stream that a companion app
//! (glasses, a phone) opened with `OpenAudioInput`, or, with neither,
//! silence while the microphone is retried.
//!
//! [`SwitchedInput`] is one [`FrameSource`] on one timeline, so everything
//! downstream (echo canceller, VAD, timestamps) is unaware of switches:
//! each source's frames are renumbered to continue the timeline at the wall
//! clock, and the VAD closes any utterance the switch cut. A missing or
//! failed microphone does not end the conversation: the daemon stays up on
//! the bus, reports the problem, and tries the microphone again every few
//! seconds (a USB headset plugged in later is picked up).

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hark_audio::device::DeviceSource;
use hark_audio::stream::{StreamFormat, StreamSource};
use hark_audio::{AudioError, Frame, FrameSource, SAMPLE_RATE};

/// How often a missing microphone is tried again.
const MIC_RETRY: Duration = Duration::from_secs(2);
/// How long a read from a quiet stream waits before the gap counts.
const STREAM_READ_TIMEOUT: Duration = Duration::from_millis(100);

/// A stream handed over by `OpenAudioInput`, waiting to be heard.
#[derive(Debug)]
pub struct ExternalInput {
    /// Hark's end of the socket pair; the caller writes into the other.
    pub stream: UnixStream,
    pub format: StreamFormat,
    /// Who sent it ("companion :1.42").
    pub label: String,
}

/// Where `OpenAudioInput` leaves a stream for the ears to pick up; shared
/// by the core (which attaches) and [`SwitchedInput`] (which takes).
#[derive(Debug, Default)]
pub struct InputSwitch {
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    pending: Option<ExternalInput>,
    /// A stream is pending or being heard.
    busy: bool,
}

impl InputSwitch {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `input` to replace the microphone. One stream at a time: the
    /// current one must be closed first.
    pub fn attach(&self, input: ExternalInput) -> Result<(), String> {
        let mut slot = self.slot();
        if slot.busy {
            return Err("another app is already streaming audio into Hark; \
                 it must close its file descriptor first"
                .into());
        }
        slot.busy = true;
        slot.pending = Some(input);
        Ok(())
    }

    fn take(&self) -> Option<ExternalInput> {
        self.slot().pending.take()
    }

    fn release(&self) {
        self.slot().busy = false;
    }
}

/// What the ears are listening to now, for the `InputDevice` property.
#[derive(Debug, Clone, PartialEq)]
pub struct InputChange {
    pub name: String,
    /// Why the microphone is not in use, if it failed.
    pub problem: Option<String>,
}

enum Current {
    Microphone(DeviceSource),
    /// Boxed: the stream's decoder and resampler state would make the
    /// enum that large whatever it holds.
    External(Box<StreamSource<UnixStream>>),
    /// No microphone: silence, and another try at `retry_at`.
    Nothing {
        retry_at: Instant,
    },
}

/// See the module documentation.
pub struct SwitchedInput {
    microphone: Option<String>,
    frame_len: usize,
    switch: Arc<InputSwitch>,
    current: Current,
    /// Added to the current source's sample positions; `None` until its
    /// first frame places it on the timeline.
    offset: Option<i64>,
    /// Timeline position the next frame should start at.
    next_sample: u64,
    /// Wall time of timeline sample 0, set on the first frame.
    started: Option<Instant>,
    report: Box<dyn FnMut(InputChange) + Send>,
}

impl SwitchedInput {
    /// Starts on the microphone `microphone` (`None`: the default one), or,
    /// if it cannot be opened, on silence (reported through `report`).
    pub fn new(
        microphone: Option<String>,
        frame_len: usize,
        switch: Arc<InputSwitch>,
        report: impl FnMut(InputChange) + Send + 'static,
    ) -> Self {
        let mut input = Self {
            microphone,
            frame_len,
            switch,
            current: Current::Nothing {
                retry_at: Instant::now(),
            },
            offset: None,
            next_sample: 0,
            started: None,
            report: Box::new(report),
        };
        input.use_microphone(false);
        input
    }

    fn microphone_name(&self) -> String {
        self.microphone.clone().unwrap_or_else(|| "default".into())
    }

    /// Opens the microphone; on failure, silence until the next try.
    /// `announce`: report success too (not for the quiet first open).
    fn use_microphone(&mut self, announce: bool) {
        self.offset = None;
        match DeviceSource::open(self.microphone.as_deref(), self.frame_len) {
            Ok(mic) => {
                tracing::info!(device = %self.microphone_name(), "listening on the microphone");
                self.current = Current::Microphone(mic);
                if announce {
                    let name = self.microphone_name();
                    (self.report)(InputChange {
                        name,
                        problem: None,
                    });
                }
            }
            Err(e) => self.lose_microphone(e),
        }
    }

    fn lose_microphone(&mut self, error: AudioError) {
        let was_listening = !matches!(self.current, Current::Nothing { .. });
        self.current = Current::Nothing {
            retry_at: Instant::now() + MIC_RETRY,
        };
        self.offset = None;
        // A retry that fails again is not news.
        if was_listening || self.started.is_none() {
            tracing::error!(
                "no microphone: {error}; trying again every {} s, and any app \
                 can stream audio in with OpenAudioInput meanwhile",
                MIC_RETRY.as_secs()
            );
            (self.report)(InputChange {
                name: "none".into(),
                problem: Some(error.to_string()),
            });
        }
    }

    fn use_external(&mut self, input: ExternalInput) {
        let ExternalInput {
            stream,
            format,
            label,
        } = input;
        let opened = stream
            .set_read_timeout(Some(STREAM_READ_TIMEOUT))
            .map_err(|e| AudioError::Stopped(format!("{label}: {e}")))
            .and_then(|()| StreamSource::new(stream, format, self.frame_len, label));
        match opened {
            Ok(source) => {
                let name = format!("external: {}", source.describe());
                tracing::info!(input = %name, "listening to a stream instead of the microphone");
                // Closing the microphone stops it queueing unheard audio.
                self.current = Current::External(Box::new(source));
                self.offset = None;
                (self.report)(InputChange {
                    name,
                    problem: None,
                });
            }
            Err(e) => {
                tracing::error!("cannot listen to the stream: {e}");
                self.switch.release();
            }
        }
    }

    fn wall_sample(&self) -> u64 {
        self.started.map_or(0, |s| {
            (s.elapsed().as_secs_f64() * SAMPLE_RATE as f64) as u64
        })
    }

    /// Moves a source's frame onto the timeline.
    fn place(&mut self, mut frame: Frame) -> Frame {
        let offset = match self.offset {
            Some(offset) => offset,
            None => {
                // A fresh source's first frame ends about now; it starts
                // where the timeline left off, or later if time has passed.
                let at = self.next_sample.max(
                    self.wall_sample()
                        .saturating_sub(frame.samples.len() as u64),
                );
                let offset = at as i64 - frame.start_sample as i64;
                self.offset = Some(offset);
                offset
            }
        };
        frame.start_sample = (frame.start_sample as i64 + offset).max(0) as u64;
        self.next_sample = frame.end_sample();
        frame
    }

    fn silent_frame(&mut self) -> Frame {
        let frame = Frame {
            start_sample: self.next_sample,
            samples: vec![0.0; self.frame_len],
        };
        self.next_sample = frame.end_sample();
        let due = self.started.expect("set by next_frame")
            + Duration::from_secs_f64(frame.end_sample() as f64 / SAMPLE_RATE as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        frame
    }
}

impl FrameSource for SwitchedInput {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        self.started.get_or_insert_with(Instant::now);
        loop {
            if let Some(input) = self.switch.take() {
                self.use_external(input);
            }
            match &mut self.current {
                Current::Microphone(mic) => {
                    let got = mic.next_frame();
                    let what = mic.describe();
                    match got {
                        Ok(Some(frame)) => return Ok(Some(self.place(frame))),
                        Ok(None) => self.lose_microphone(AudioError::Stopped(format!(
                            "{what} stopped delivering audio"
                        ))),
                        Err(e) => self.lose_microphone(e),
                    }
                }
                Current::External(stream) => match stream.next_frame() {
                    Ok(Some(frame)) => return Ok(Some(self.place(frame))),
                    Ok(None) => {
                        tracing::info!("the stream was closed; back to the microphone");
                        self.switch.release();
                        self.use_microphone(true);
                    }
                    Err(e) => {
                        tracing::warn!("stream failed ({e}); back to the microphone");
                        self.switch.release();
                        self.use_microphone(true);
                    }
                },
                Current::Nothing { retry_at } => {
                    if Instant::now() >= *retry_at {
                        self.use_microphone(true);
                        continue;
                    }
                    return Ok(Some(self.silent_frame()));
                }
            }
        }
    }

    fn frame_len(&self) -> usize {
        self.frame_len
    }

    fn describe(&self) -> String {
        match &self.current {
            Current::Microphone(mic) => mic.describe(),
            Current::External(stream) => stream.describe(),
            Current::Nothing { .. } => "no input".into(),
        }
    }

    fn hears_local_playback(&self) -> bool {
        matches!(self.current, Current::Microphone(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A microphone name no machine has, so the input starts on silence.
    const NO_SUCH_MIC: &str = "hark-test-no-such-microphone";

    fn input() -> (
        SwitchedInput,
        Arc<InputSwitch>,
        Arc<Mutex<Vec<InputChange>>>,
    ) {
        let switch = Arc::new(InputSwitch::default());
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        let input = SwitchedInput::new(Some(NO_SUCH_MIC.into()), 160, switch.clone(), move |c| {
            seen.lock().unwrap().push(c)
        });
        (input, switch, changes)
    }

    #[test]
    fn without_a_microphone_it_hears_silence_and_says_why() {
        let (mut input, _, changes) = input();
        for k in 0..3 {
            let frame = input.next_frame().unwrap().unwrap();
            assert_eq!(frame.start_sample, k * 160);
            assert!(frame.samples.iter().all(|&x| x == 0.0));
        }
        let changes = changes.lock().unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].name, "none");
        assert!(changes[0].problem.as_ref().unwrap().contains(NO_SUCH_MIC));
    }

    #[test]
    fn a_stream_takes_over_continues_the_timeline_and_hands_back() {
        let (mut input, switch, changes) = input();
        let first = input.next_frame().unwrap().unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let external = |stream| ExternalInput {
            stream,
            format: StreamFormat::S16LE_16K_MONO,
            label: "test".into(),
        };
        switch.attach(external(ours)).unwrap();
        let (spare, _keep) = UnixStream::pair().unwrap();
        assert!(switch.attach(external(spare)).is_err(), "one at a time");
        theirs
            .write_all(&[0x00, 0x10].repeat(320)) // 4096 / 32768 = 0.125
            .unwrap();
        drop(theirs);
        let mut frames = Vec::new();
        while frames.len() < 2 {
            let frame = input.next_frame().unwrap().unwrap();
            if frame.samples.iter().any(|&x| x != 0.0) {
                frames.push(frame);
            }
        }
        assert!(frames[0].start_sample >= first.end_sample());
        assert_eq!(frames[1].start_sample, frames[0].end_sample());
        assert!(frames[0].samples.iter().all(|&x| x == 0.125));
        assert!(!input.hears_local_playback());
        // The stream ended: the next frames are the (missing) microphone's
        // silence again, later on the same timeline, and a new stream may
        // be attached.
        let after = input.next_frame().unwrap().unwrap();
        assert!(after.start_sample >= frames[1].end_sample());
        let names: Vec<String> = changes
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names[0], "none");
        assert_eq!(names[1], "external: test (s16le:16000:1)");
        assert_eq!(names.last().unwrap(), "none");
        let (again, _keep) = UnixStream::pair().unwrap();
        switch.attach(external(again)).unwrap();
    }

    #[test]
    fn an_opus_stream_with_bad_packets_is_heard_to_its_end() {
        use hark_audio::codec::framing::length_prefixed;
        let (mut input, switch, changes) = input();
        input.next_frame().unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        switch
            .attach(ExternalInput {
                stream: ours,
                format: "opus:48000".parse().unwrap(),
                label: "glasses".into(),
            })
            .unwrap();
        let tone: Vec<f32> = (0..4800).map(|i| 0.5 * (i as f32 * 0.1).sin()).collect();
        let mut packets = hark_audio::codec::opus::encode(&tone, 20.0, 24_000, None).unwrap();
        packets[2] = vec![0xff; 7]; // garbage
        packets[4].clear(); // lost
        let mut bytes = length_prefixed(&packets);
        bytes.extend(0xffffu16.to_le_bytes()); // absurd, then cut short
        theirs.write_all(&bytes).unwrap();
        drop(theirs);
        let mut loud = 0;
        while changes.lock().unwrap().len() < 3 {
            let frame = input.next_frame().unwrap().unwrap();
            loud += usize::from(frame.samples.iter().any(|s| s.abs() > 0.1));
        }
        // 300 ms of tone in 10 ms frames, about all of it heard.
        assert!(loud >= 20, "{loud} loud frames");
        let names: Vec<String> = changes
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names[1], "external: glasses (opus:48000)");
        assert_eq!(names[2], "none", "back to the (missing) microphone");
    }
}
