//! The "hark-speaker" thread: plays synthesized clauses in order, pauses,
//! resumes and flushes on command, and reports how much of each clause has
//! actually been heard.
//!
//! It writes a *continuous* stream to its sink, silence included, a few tens
//! of milliseconds ahead of the listener. That gives every written sample a
//! fixed place on the output timeline, which is what makes two things exact:
//! the "heard" position of a clause (written minus still queued), and the
//! echo canceller's reference (see [`EchoReference`]), which must line up
//! with what the microphone picks up sample for sample.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hark_audio::device::{DevicePlayer, PlayedAudio};
use hark_audio::resample::Resampler;
use hark_audio::wav::WavSink;
use hark_audio::{AudioError, SAMPLE_RATE};
use hark_converse::turn::ClauseId;

use crate::clock::Timeline;

/// How often the thread wakes to top up the sink and report progress.
const TICK: Duration = Duration::from_millis(10);
/// How far ahead of the listener a device is kept fed. Enough to ride out a
/// late wake-up on a busy machine; a pause or flush drops it all anyway.
const DEVICE_LEAD: Duration = Duration::from_millis(100);
/// How often a playing clause reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How much playback history the echo reference keeps.
const REFERENCE_KEEP: Duration = Duration::from_secs(4);

/// What the core asks of the speaker.
#[derive(Debug)]
pub enum SpeakerCommand {
    /// Queue a clause; `pcm` is mono at the sink's rate.
    Play {
        clause: ClauseId,
        pcm: Vec<f32>,
    },
    /// Fall silent at once, keeping the queue and the heard position.
    Pause,
    Resume,
    /// Fall silent at once and drop every queued clause.
    Flush,
    /// Queue a sound that is no clause (a timer's chime): played in turn,
    /// never reported.
    Chime(Vec<f32>),
    /// Scale everything played from now on (the output volume).
    SetGain(f32),
}

/// What the speaker tells the core; positions are what was *heard*.
#[derive(Debug, Clone, PartialEq)]
pub enum PlaybackReport {
    Started {
        clause: ClauseId,
    },
    Progress {
        clause: ClauseId,
        played_fraction: f32,
    },
    Finished {
        clause: ClauseId,
    },
    /// Audible output stopped because of a pause or flush.
    Silenced {
        flushed: bool,
    },
    Failed(String),
    /// The speaker came or went (`output` is `none` without one; `problem`
    /// says why).
    OutputChanged {
        output: String,
        problem: Option<String>,
    },
}

/// Where the speaker's stream goes.
pub trait SpeakerSink: Send {
    /// Sample rate of the stream (mono).
    fn rate(&self) -> u32;
    /// Samples the sink should be given now to stay just ahead of the
    /// listener.
    fn wanted(&mut self) -> usize;
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError>;
    /// Samples written that have not been heard yet.
    fn queued(&self) -> usize;
    /// Drops everything queued and not heard yet.
    fn discard(&mut self);
    /// Samples of silence the listener heard that were never written (a
    /// device that ran dry). Monotonic.
    fn gaps(&self) -> u64;
    /// Appends to `out` what reached the listener since the last call,
    /// silence included: the echo canceller's reference.
    fn take_heard(&mut self, out: &mut Vec<f32>);
    fn finish(self: Box<Self>) -> Result<(), AudioError>;
}

/// A playback device through cpal.
pub struct DeviceSink {
    player: DevicePlayer,
    rate: u32,
    lead: usize,
    /// Silence the device played before the first write is not a gap.
    silence_at_start: Option<u64>,
    /// What the device played, straight from its callback.
    played: Option<PlayedAudio>,
    played_lost: u64,
}

impl DeviceSink {
    pub fn open(name: Option<&str>) -> Result<Self, AudioError> {
        let player = DevicePlayer::open(name)?;
        let rate = player.device_format().sample_rate;
        Ok(Self {
            rate,
            lead: (rate as f64 * DEVICE_LEAD.as_secs_f64()) as usize,
            silence_at_start: None,
            played: player.take_played(),
            played_lost: 0,
            player,
        })
    }

    pub fn name(&self) -> &str {
        self.player.name()
    }

    /// An error once the device has failed or stopped taking audio.
    pub fn health(&self) -> Result<(), AudioError> {
        self.player.health()
    }
}

impl SpeakerSink for DeviceSink {
    fn rate(&self) -> u32 {
        self.rate
    }
    fn wanted(&mut self) -> usize {
        self.lead.saturating_sub(self.player.queued_frames())
    }
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.silence_at_start
            .get_or_insert_with(|| self.player.silence_played_frames());
        self.player.play(samples, self.rate)?;
        Ok(())
    }
    fn queued(&self) -> usize {
        self.player.queued_frames()
    }
    fn discard(&mut self) {
        self.player.flush();
    }
    fn gaps(&self) -> u64 {
        match self.silence_at_start {
            Some(start) => self.player.silence_played_frames().saturating_sub(start),
            None => 0,
        }
    }
    fn take_heard(&mut self, out: &mut Vec<f32>) {
        let Some(played) = self.played.as_mut() else {
            return;
        };
        let lost = played.lost();
        if lost > self.played_lost {
            // Read too late: keep the timeline, not the sound.
            out.resize(out.len() + (lost - self.played_lost) as usize, 0.0);
            self.played_lost = lost;
        }
        played.read(out);
    }
    fn finish(self: Box<Self>) -> Result<(), AudioError> {
        self.player.drain()?;
        Ok(())
    }
}

/// Sees every sample a [`ClockedFileSink`] writes, as it is written
/// (benchmarks watch Hark's voice through it).
pub trait OutputTap: Send + Sync {
    /// `samples` at `rate` start at sample `position` of the output.
    fn written(&self, position: u64, samples: &[f32], rate: u32);
}

/// A WAV file written at real-time pace on the input's timeline: sample `n`
/// of the file is what Hark was saying `n / rate` seconds after the input
/// started, so the two files line up.
pub struct ClockedFileSink {
    sink: WavSink,
    rate: u32,
    timeline: Timeline,
    written: u64,
    tap: Option<Arc<dyn OutputTap>>,
    /// Written since the last `take_heard` (a file hears at once).
    heard: Vec<f32>,
}

impl ClockedFileSink {
    pub fn new(
        sink: WavSink,
        rate: u32,
        timeline: Timeline,
        tap: Option<Arc<dyn OutputTap>>,
    ) -> Self {
        Self {
            sink,
            rate,
            timeline,
            written: 0,
            tap,
            heard: Vec::new(),
        }
    }
}

impl SpeakerSink for ClockedFileSink {
    fn rate(&self) -> u32 {
        self.rate
    }
    fn wanted(&mut self) -> usize {
        let Some(elapsed) = self.timeline.elapsed() else {
            return 0;
        };
        let due = (elapsed.as_secs_f64() * self.rate as f64) as u64;
        due.saturating_sub(self.written) as usize
    }
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.sink.write(samples)?;
        if let Some(tap) = &self.tap {
            tap.written(self.written, samples, self.rate);
        }
        self.written += samples.len() as u64;
        self.heard.extend_from_slice(samples);
        Ok(())
    }
    fn queued(&self) -> usize {
        0
    }
    fn discard(&mut self) {}
    fn gaps(&self) -> u64 {
        0
    }
    fn take_heard(&mut self, out: &mut Vec<f32>) {
        out.append(&mut self.heard);
    }
    fn finish(self: Box<Self>) -> Result<(), AudioError> {
        self.sink.finalize()?;
        Ok(())
    }
}

/// What the speaker played, at 16 kHz, on a timeline the capture side can
/// line up with the microphone: the echo canceller's reference signal.
///
/// It is read back from the device callback (everything the device was
/// handed, silence included), so it is one unbroken stream whatever pauses
/// and flushes happen. Sample `i` is taken to be heard at `origin + i /
/// 16000 s`; the estimate errs early (it ignores the device's own buffer),
/// which keeps the reference ahead of its echo, as the canceller needs.
#[derive(Debug, Default)]
pub struct EchoReference {
    inner: Mutex<ReferenceInner>,
}

#[derive(Debug, Default)]
struct ReferenceInner {
    origin: Option<Instant>,
    /// Index of `samples[0]` on the reference timeline.
    first: u64,
    samples: VecDeque<f32>,
}

impl EchoReference {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReferenceInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When reference sample 0 is heard; `None` until playback has begun.
    pub fn origin(&self) -> Option<Instant> {
        self.lock().origin
    }

    fn start(&self, origin: Instant) {
        self.lock().origin.get_or_insert(origin);
    }

    fn append(&self, samples: &[f32]) {
        let mut inner = self.lock();
        inner.samples.extend(samples);
        let keep = (REFERENCE_KEEP.as_secs_f64() * SAMPLE_RATE as f64) as usize;
        let excess = inner.samples.len().saturating_sub(keep);
        inner.samples.drain(..excess);
        inner.first += excess as u64;
    }

    /// Copies reference samples `[index, index + out.len())` into `out`;
    /// silence where there is no playback (not yet written, or too old).
    pub fn read(&self, index: i64, out: &mut [f32]) {
        let inner = self.lock();
        for (k, slot) in out.iter_mut().enumerate() {
            let i = index + k as i64;
            *slot = if i >= inner.first as i64 {
                inner
                    .samples
                    .get((i - inner.first as i64) as usize)
                    .copied()
                    .unwrap_or(0.0)
            } else {
                0.0
            };
        }
    }
}

/// One queued clause.
struct Queued {
    clause: ClauseId,
    /// Progress is reported to the core (false for a chime).
    reported: bool,
    pcm: Vec<f32>,
    /// Next sample to write.
    next: usize,
    /// Where its samples went on the stream: (offset in pcm, stream index,
    /// length). More than one after a pause rewinds it.
    pieces: Vec<(usize, u64, usize)>,
    started: bool,
    last_progress: Option<Instant>,
}

impl Queued {
    /// Samples of the clause heard once the listener has reached stream
    /// index `heard_until`.
    fn heard(&self, heard_until: u64) -> usize {
        self.pieces
            .iter()
            .filter(|&&(_, at, _)| at < heard_until)
            .map(|&(offset, at, len)| offset + ((heard_until - at) as usize).min(len))
            .max()
            .unwrap_or(0)
    }
}

/// Handle to the speaker thread.
pub struct Speaker {
    commands: Sender<SpeakerCommand>,
    thread: Option<JoinHandle<Result<(), AudioError>>>,
    rate: u32,
}

impl Speaker {
    /// Starts the thread; `report` runs on it for every [`PlaybackReport`].
    pub fn spawn(
        sink: Box<dyn SpeakerSink>,
        echo_reference: Option<Arc<EchoReference>>,
        report: impl FnMut(PlaybackReport) + Send + 'static,
    ) -> std::io::Result<Self> {
        let rate = sink.rate();
        let (commands, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hark-speaker".into())
            .spawn(move || speaker_loop(sink, rx, echo_reference, report))?;
        Ok(Self {
            commands,
            thread: Some(thread),
            rate,
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn send(&self, command: SpeakerCommand) {
        // A gone thread has already reported why through `report`.
        let _ = self.commands.send(command);
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        let _ = self.commands.send(SpeakerCommand::Flush);
        let (tx, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.commands, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct SpeakerState {
    sink: Box<dyn SpeakerSink>,
    queue: VecDeque<Queued>,
    paused: bool,
    /// Samples ever written, minus those discarded unheard: the stream index
    /// of the next sample written.
    written: u64,
    /// Sink gaps already accounted for.
    gaps_seen: u64,
    reference: Option<(Arc<EchoReference>, Resampler)>,
    /// Output volume applied to every clause.
    gain: f32,
    scratch: Vec<f32>,
    heard: Vec<f32>,
    resampled: Vec<f32>,
}

fn speaker_loop(
    sink: Box<dyn SpeakerSink>,
    commands: Receiver<SpeakerCommand>,
    echo_reference: Option<Arc<EchoReference>>,
    mut report: impl FnMut(PlaybackReport),
) -> Result<(), AudioError> {
    let reference = match echo_reference {
        Some(r) => Some((r, Resampler::with_output_rate(sink.rate(), 1, SAMPLE_RATE)?)),
        None => None,
    };
    let mut s = SpeakerState {
        sink,
        queue: VecDeque::new(),
        paused: false,
        written: 0,
        gaps_seen: 0,
        reference,
        gain: 1.0,
        scratch: Vec::new(),
        heard: Vec::new(),
        resampled: Vec::new(),
    };
    let mut closing = false;
    loop {
        match commands.recv_timeout(TICK) {
            Ok(command) => s.apply(command, &mut report),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => closing = true,
        }
        while let Ok(command) = commands.try_recv() {
            s.apply(command, &mut report);
        }
        if let Err(e) = s.feed() {
            report(PlaybackReport::Failed(e.to_string()));
            return Err(e);
        }
        s.report_progress(&mut report);
        if closing && (s.queue.is_empty() || s.paused) {
            break;
        }
    }
    s.sink.finish()
}

impl SpeakerState {
    fn apply(&mut self, command: SpeakerCommand, report: &mut impl FnMut(PlaybackReport)) {
        match command {
            SpeakerCommand::Play { clause, pcm } => self.queue.push_back(Queued {
                clause,
                reported: true,
                pcm,
                next: 0,
                pieces: Vec::new(),
                started: false,
                last_progress: None,
            }),
            SpeakerCommand::Pause => {
                if !self.paused {
                    self.paused = true;
                    self.drop_unheard();
                    self.report_progress(report);
                    report(PlaybackReport::Silenced { flushed: false });
                }
            }
            SpeakerCommand::Resume => self.paused = false,
            SpeakerCommand::Chime(pcm) => self.queue.push_back(Queued {
                clause: 0,
                reported: false,
                pcm,
                next: 0,
                pieces: Vec::new(),
                started: false,
                last_progress: None,
            }),
            SpeakerCommand::SetGain(gain) => {
                self.gain = if gain.is_finite() {
                    gain.clamp(0.0, 4.0)
                } else {
                    1.0
                };
            }
            SpeakerCommand::Flush => {
                self.drop_unheard();
                let was_playing = !self.queue.is_empty();
                self.queue.clear();
                self.paused = false;
                if was_playing {
                    report(PlaybackReport::Silenced { flushed: true });
                }
            }
        }
    }

    /// Discards what the sink holds unheard and rewinds each clause to what
    /// was heard, so a resume carries on from there.
    fn drop_unheard(&mut self) {
        let unheard = self.sink.queued();
        self.sink.discard();
        self.written = self.written.saturating_sub(unheard as u64);
        let heard_until = self.written;
        for q in &mut self.queue {
            q.next = q.heard(heard_until);
            q.pieces.retain_mut(|(_, at, len)| {
                *len = (*len).min(heard_until.saturating_sub(*at) as usize);
                *len > 0
            });
        }
    }

    /// Tops the sink up with clause audio, or silence while paused or idle.
    fn feed(&mut self) -> Result<(), AudioError> {
        let gaps = self.sink.gaps();
        if gaps > self.gaps_seen {
            // The device ran dry and played silence we never wrote: move our
            // timeline (and the echo reference) on by as much.
            self.written += gaps - self.gaps_seen;
            self.gaps_seen = gaps;
        }
        self.feed_reference()?;
        let wanted = self.sink.wanted();
        if wanted == 0 {
            return Ok(());
        }
        self.scratch.clear();
        if !self.paused {
            for q in self.queue.iter_mut() {
                let take = (wanted - self.scratch.len()).min(q.pcm.len() - q.next);
                if take > 0 {
                    q.pieces
                        .push((q.next, self.written + self.scratch.len() as u64, take));
                    let piece = &q.pcm[q.next..q.next + take];
                    if self.gain == 1.0 {
                        self.scratch.extend_from_slice(piece);
                    } else {
                        let gain = self.gain;
                        self.scratch
                            .extend(piece.iter().map(|s| (s * gain).clamp(-1.0, 1.0)));
                    }
                    q.next += take;
                }
                if self.scratch.len() == wanted {
                    break;
                }
            }
        }
        self.scratch.resize(wanted, 0.0);
        self.sink.write(&self.scratch)?;
        self.written += wanted as u64;
        Ok(())
    }

    /// Moves what the listener heard into the echo reference.
    fn feed_reference(&mut self) -> Result<(), AudioError> {
        // Drained even with no echo canceller to feed: a sink keeps what
        // was heard until asked (a clocked file kept hours of it).
        self.heard.clear();
        self.sink.take_heard(&mut self.heard);
        let Some((reference, resampler)) = &mut self.reference else {
            return Ok(());
        };
        if self.heard.is_empty() {
            return Ok(());
        }
        let age = Duration::from_secs_f64(self.heard.len() as f64 / self.sink.rate() as f64);
        reference.start(Instant::now().checked_sub(age).unwrap_or_else(Instant::now));
        self.resampled.clear();
        resampler.process(&self.heard, &mut self.resampled)?;
        reference.append(&self.resampled);
        Ok(())
    }

    fn report_progress(&mut self, report: &mut impl FnMut(PlaybackReport)) {
        let heard_until = self.written.saturating_sub(self.sink.queued() as u64);
        while let Some(q) = self.queue.front_mut() {
            let heard = q.heard(heard_until);
            if !q.reported {
                if heard >= q.pcm.len() {
                    self.queue.pop_front();
                    continue;
                }
                break;
            }
            if !q.started && (heard > 0 || q.pcm.is_empty()) {
                q.started = true;
                report(PlaybackReport::Started { clause: q.clause });
            }
            if heard >= q.pcm.len() {
                report(PlaybackReport::Finished { clause: q.clause });
                self.queue.pop_front();
                continue;
            }
            if q.started
                && q.last_progress
                    .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY)
            {
                q.last_progress = Some(Instant::now());
                report(PlaybackReport::Progress {
                    clause: q.clause,
                    played_fraction: heard as f32 / q.pcm.len() as f32,
                });
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that holds up to `lead` samples "in the device" until the
    /// test plays them.
    struct FakeSink {
        lead: usize,
        device: Arc<Mutex<FakeDevice>>,
    }

    #[derive(Default)]
    struct FakeDevice {
        pending: VecDeque<f32>,
        heard: Vec<f32>,
        /// Heard and not yet taken by the speaker (`take_heard`).
        untaken: Vec<f32>,
    }

    impl FakeDevice {
        fn play(&mut self, n: usize) {
            for _ in 0..n {
                let s = self.pending.pop_front().unwrap_or(0.0);
                self.heard.push(s);
                self.untaken.push(s);
            }
        }
    }

    impl SpeakerSink for FakeSink {
        fn rate(&self) -> u32 {
            1000
        }
        fn wanted(&mut self) -> usize {
            self.lead.saturating_sub(self.queued())
        }
        fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
            self.device.lock().unwrap().pending.extend(samples);
            Ok(())
        }
        fn queued(&self) -> usize {
            self.device.lock().unwrap().pending.len()
        }
        fn discard(&mut self) {
            self.device.lock().unwrap().pending.clear();
        }
        fn gaps(&self) -> u64 {
            0
        }
        fn take_heard(&mut self, out: &mut Vec<f32>) {
            out.append(&mut self.device.lock().unwrap().untaken);
        }
        fn finish(self: Box<Self>) -> Result<(), AudioError> {
            Ok(())
        }
    }

    struct Rig {
        speaker: SpeakerState,
        device: Arc<Mutex<FakeDevice>>,
        reports: Vec<PlaybackReport>,
    }

    impl Rig {
        fn new(lead: usize) -> Self {
            let device = Arc::new(Mutex::new(FakeDevice::default()));
            let sink = FakeSink {
                lead,
                device: device.clone(),
            };
            let speaker = SpeakerState {
                sink: Box::new(sink),
                queue: VecDeque::new(),
                paused: false,
                written: 0,
                gaps_seen: 0,
                reference: None,
                gain: 1.0,
                scratch: Vec::new(),
                heard: Vec::new(),
                resampled: Vec::new(),
            };
            Self {
                speaker,
                device,
                reports: Vec::new(),
            }
        }

        fn command(&mut self, command: SpeakerCommand) {
            let reports = &mut self.reports;
            self.speaker.apply(command, &mut |r| reports.push(r));
        }

        fn play(&mut self, clause: ClauseId, pcm: Vec<f32>) {
            self.command(SpeakerCommand::Play { clause, pcm });
        }

        /// One tick: top up, let the device play `n` samples, report.
        fn step(&mut self, n: usize) {
            self.speaker.feed().unwrap();
            self.device.lock().unwrap().play(n);
            let reports = &mut self.reports;
            self.speaker.report_progress(&mut |r| reports.push(r));
        }

        fn heard(&self) -> Vec<f32> {
            self.device.lock().unwrap().heard.clone()
        }
    }

    #[test]
    fn clauses_play_in_order_and_report_what_was_heard() {
        let mut rig = Rig::new(4);
        rig.play(1, vec![1.0; 6]);
        rig.play(2, vec![2.0; 3]);
        for _ in 0..5 {
            rig.step(4);
        }
        let heard = rig.heard();
        assert_eq!(&heard[..9], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert!(heard[9..].iter().all(|&x| x == 0.0));
        let events: Vec<_> = rig
            .reports
            .iter()
            .filter(|r| !matches!(r, PlaybackReport::Progress { .. }))
            .cloned()
            .collect();
        assert_eq!(
            events,
            [
                PlaybackReport::Started { clause: 1 },
                PlaybackReport::Finished { clause: 1 },
                PlaybackReport::Started { clause: 2 },
                PlaybackReport::Finished { clause: 2 },
            ]
        );
    }

    #[test]
    fn pause_drops_the_unheard_queue_and_resume_replays_it() {
        let mut rig = Rig::new(4);
        rig.play(7, (1..=10).map(|i| i as f32).collect());
        rig.step(2); // wrote 1..=4, heard 1 and 2
        rig.command(SpeakerCommand::Pause);
        assert!(rig.reports.contains(&PlaybackReport::Progress {
            clause: 7,
            played_fraction: 0.2
        }));
        rig.step(4); // silence while paused
        rig.command(SpeakerCommand::Resume);
        for _ in 0..4 {
            rig.step(4);
        }
        let heard: Vec<f32> = rig.heard().into_iter().filter(|&x| x != 0.0).collect();
        let expected: Vec<f32> = (1..=10).map(|i| i as f32).collect();
        assert_eq!(heard, expected, "nothing skipped, nothing repeated");
        assert!(rig
            .reports
            .contains(&PlaybackReport::Finished { clause: 7 }));
    }

    #[test]
    fn flush_silences_and_forgets_everything() {
        let mut rig = Rig::new(4);
        rig.play(1, vec![1.0; 100]);
        rig.step(3);
        rig.command(SpeakerCommand::Flush);
        rig.step(4);
        rig.step(4);
        let heard = rig.heard();
        assert_eq!(&heard[..3], &[1.0; 3]);
        assert!(heard[3..].iter().all(|&x| x == 0.0), "{heard:?}");
        assert!(rig
            .reports
            .contains(&PlaybackReport::Silenced { flushed: true }));
        assert!(!rig
            .reports
            .contains(&PlaybackReport::Finished { clause: 1 }));
    }

    #[test]
    fn a_chime_plays_in_turn_unreported_and_gain_scales_clauses() {
        let mut rig = Rig::new(4);
        rig.command(SpeakerCommand::Chime(vec![0.5; 3]));
        rig.command(SpeakerCommand::SetGain(2.0));
        rig.play(1, vec![0.25; 2]);
        for _ in 0..3 {
            rig.step(4);
        }
        // The gain applies to what is written from now on, chime included.
        assert_eq!(&rig.heard()[..5], &[1.0, 1.0, 1.0, 0.5, 0.5]);
        let events: Vec<_> = rig
            .reports
            .iter()
            .filter(|r| !matches!(r, PlaybackReport::Progress { .. }))
            .cloned()
            .collect();
        assert_eq!(
            events,
            [
                PlaybackReport::Started { clause: 1 },
                PlaybackReport::Finished { clause: 1 }
            ]
        );
    }

    #[test]
    fn echo_reference_reads_silence_outside_what_was_written() {
        let r = EchoReference::default();
        r.append(&[1.0, 2.0, 3.0]);
        let mut out = [9.0; 5];
        r.read(-1, &mut out);
        assert_eq!(out, [0.0, 1.0, 2.0, 3.0, 0.0]);
    }

    #[test]
    fn what_was_heard_is_taken_even_with_no_echo_canceller_to_feed() {
        // A sink keeps what was heard until the speaker takes it; without
        // a reference to feed it was never taken (hours of a clocked file).
        let mut rig = Rig::new(50);
        rig.play(1, vec![0.5; 500]);
        for _ in 0..40 {
            rig.step(20);
        }
        assert_eq!(rig.heard().len(), 800);
        assert!(rig.device.lock().unwrap().untaken.len() <= 20);
    }
}
