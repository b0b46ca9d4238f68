//! The ears: "hark-hear" (source → echo canceller → VAD), on its own named
//! thread, reporting to the core through a callback. (Whisper is
//! `hark_stt::SttWorker`, "hark-stt".)
//!
//! Echo cancellation needs the microphone and the speaker's reference on one
//! timeline. Both are continuous streams, so a single offset, measured once
//! when both have started, maps a microphone sample to the reference sample
//! played at the same moment; the canceller's adaptive filter absorbs the
//! rest of the delay (device buffers, the room), up to its tail length.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::sync::mpsc::{Receiver, SyncSender};

use hark_aec::{AecError, EchoCanceller};
use hark_audio::vad::{Segmenter, SpeechClassifier, VadConfig, VadEvent};
use hark_audio::{Frame, FrameSource, SAMPLE_RATE};
use hark_endpoint::{EndpointConfig, Reading, TurnDetector};

use crate::clock::Timeline;
use crate::speaker::EchoReference;

/// Echo canceller block: 10 ms, what speexdsp is tuned for.
const AEC_BLOCK: usize = SAMPLE_RATE as usize / 100;
/// Ratios remembered by the echo gate: 3 s of blocks with playback.
const GATE_HISTORY: usize = 300;
/// The residual must be this much louder (energy ratio, 6 dB) than the
/// echo the gate expects before it counts as the user.
const GATE_MARGIN: f32 = 4.0;
/// Below this mean square (-60 dBFS) a block is silence for the gate.
const GATE_FLOOR: f32 = 1e-6;
/// Blocks at the start of each stretch of playback that teach the gate
/// nothing: the echo is still on its way (device buffers, the room).
const GATE_ECHO_ARRIVAL: usize = 20;
/// Ratios needed before the learned coupling is trusted.
const GATE_WARM_UP: usize = 50;
/// Silence after speech at which the utterance so far is sent to Whisper
/// on speculation, well before the VAD's end of turn (300 ms in a
/// conversation): if no speech follows, that transcript is the final one
/// and the reply starts sooner.
const SPECULATE_AFTER_MS: u64 = 120;
/// The same with Smart Turn, sooner: its verdict comes about
/// `first_check_ms` + one inference (~230 ms) into the pause, and a
/// transcript that is there by then lets the reply be prepared meanwhile.
/// Two VAD frames of silence, so the audio Whisper gets does not end
/// right on the last word.
const SPECULATE_BEFORE_SMART_TURN_MS: u64 = 60;

/// What the ears report. Times are on the input timeline, in ms.
#[derive(Debug)]
pub enum HearingEvent {
    SpeechStarted {
        at_ms: u64,
    },
    SpeechEnded {
        start_ms: u64,
        at_ms: u64,
        audio: Vec<f32>,
    },
    SpeechDiscarded {
        at_ms: u64,
    },
    /// The utterance still in progress, for a partial transcript.
    SpeechSoFar {
        audio: Vec<f32>,
    },
    /// The speech of the open utterance paused at `speech_end_ms`; `audio`
    /// is all of it. If a `SpeechEnded` with the same end follows, its
    /// transcript is this audio's.
    SpeechPausing {
        speech_end_ms: u64,
        audio: Vec<f32>,
    },
    /// The user spoke again after a pause in the same utterance: a reply
    /// prepared during the pause is not wanted.
    SpeechResumed {
        at_ms: u64,
    },
    /// Smart Turn judged the pause after `speech_end_ms`; `complete`: it
    /// ended the utterance. `unfinished_words`: what the pause's transcript
    /// said when it was read (`Some(true)`: it kept the turn open).
    TurnJudged {
        speech_end_ms: u64,
        probability: f32,
        inference_ms: u64,
        complete: bool,
        unfinished_words: Option<bool>,
    },
    /// The wake word model heard its phrase, ending at `at_ms`.
    WakeWord {
        at_ms: u64,
        score: f32,
    },
    /// The ears switched to another input (the daemon's [`SwitchedInput`]).
    ///
    /// [`SwitchedInput`]: crate::input::SwitchedInput
    InputChanged(crate::input::InputChange),
    /// The source has no more audio (end of file).
    Ended,
    Failed(String),
}

/// The canceller and the playback it cancels.
pub struct EchoCancellation {
    pub canceller: EchoCanceller,
    pub reference: Arc<EchoReference>,
    /// Echo path covered, in samples.
    pub tail: usize,
}

impl EchoCancellation {
    /// `tail_ms`: the longest echo path it can cancel (device buffers plus
    /// the room).
    pub fn new(reference: Arc<EchoReference>, tail_ms: u32) -> Result<Self, AecError> {
        let tail = (SAMPLE_RATE * tail_ms / 1000) as usize;
        let canceller = EchoCanceller::new(SAMPLE_RATE, AEC_BLOCK, tail)?;
        Ok(Self {
            canceller,
            reference,
            tail,
        })
    }
}

/// The second line of defence after the canceller, which needs a second or
/// two of Hark's voice to converge (and every barge-in pause interrupts that
/// voice): a block counts as the user only if it is clearly louder than the
/// echo that Hark's recent playback can explain.
///
/// The expected echo is the loudest 10 ms of playback within the echo path
/// times the *coupling*: how loud the residual usually is relative to that
/// playback, learned as the 95th percentile of the ratio over the last 3 s
/// of playback, skipping the first 200 ms of each stretch while the echo is
/// still on its way and the blocks where the VAD hears an utterance (the
/// user talking over Hark must not teach it the user's level; with no echo
/// at all, silent blocks keep it near zero). Until
/// half a second is learned the coupling is taken as 0 dB, so Hark cannot be
/// interrupted in the first moments of its very first reply, rather than
/// interrupting itself.
struct EchoGate {
    tail: usize,
    /// Consecutive blocks with playback in the echo path.
    playing_for: usize,
    window: Vec<f32>,
    ratios: std::collections::VecDeque<f32>,
    sorted: Vec<f32>,
}

impl EchoGate {
    fn new(tail: usize) -> Self {
        Self {
            tail,
            playing_for: 0,
            window: vec![0.0; tail + AEC_BLOCK],
            ratios: std::collections::VecDeque::with_capacity(GATE_HISTORY),
            sorted: Vec::with_capacity(GATE_HISTORY),
        }
    }

    /// Whether the cleaned block at reference index `index` is only echo.
    /// `user_speaking`: the VAD is inside an utterance, so the block may be
    /// the user and teaches the coupling nothing. (Learned from the user
    /// talking over Hark, the 95th percentile soon is the user's own level:
    /// after a few barge-ins the gate then swallowed the rest of an
    /// interrupting sentence once Hark resumed.)
    fn is_echo(
        &mut self,
        reference: &EchoReference,
        index: i64,
        cleaned: &[f32],
        user_speaking: bool,
    ) -> bool {
        reference.read(index - self.tail as i64, &mut self.window);
        let playback = self
            .window
            .chunks(AEC_BLOCK)
            .map(mean_square)
            .fold(0.0f32, f32::max);
        if playback < GATE_FLOOR {
            self.playing_for = 0;
            return false; // Hark is not talking: nothing to mistake
        }
        self.playing_for += 1;
        let residual = mean_square(cleaned);
        let ratio = residual / playback;
        // Quiet blocks count too: with no echo at all (a headset) they keep
        // the learned coupling near zero, so the user is never gated.
        if self.playing_for > GATE_ECHO_ARRIVAL && !user_speaking {
            if self.ratios.len() == GATE_HISTORY {
                self.ratios.pop_front();
            }
            self.ratios.push_back(ratio);
        }
        let coupling = if self.ratios.len() < GATE_WARM_UP {
            1.0
        } else {
            self.sorted.clear();
            self.sorted.extend(self.ratios.iter().copied());
            let at = self.sorted.len() * 19 / 20;
            *self.sorted.select_nth_unstable_by(at, f32::total_cmp).1
        };
        residual >= GATE_FLOOR && ratio < coupling * GATE_MARGIN
    }
}

fn mean_square(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32
}

/// Cleans microphone frames with the echo canceller.
struct Aec {
    gate: EchoGate,
    inner: EchoCancellation,
    /// Reference index minus microphone index, once both are known.
    offset: Option<i64>,
    reference: Vec<f32>,
    cleaned: Vec<f32>,
    /// `HARK_AEC_DUMP=DIR`: raw f32 microphone, aligned reference and
    /// cleaned streams, for tuning the canceller offline.
    dump: Option<[std::io::BufWriter<std::fs::File>; 3]>,
}

impl Aec {
    fn new(inner: EchoCancellation) -> Self {
        let dump = std::env::var_os("HARK_AEC_DUMP").and_then(|dir| {
            let open = |name: &str| {
                std::fs::File::create(std::path::Path::new(&dir).join(name))
                    .map(std::io::BufWriter::new)
                    .ok()
            };
            Some([
                open("mic.f32")?,
                open("reference.f32")?,
                open("cleaned.f32")?,
            ])
        });
        Self {
            gate: EchoGate::new(inner.tail),
            inner,
            offset: None,
            reference: Vec::new(),
            cleaned: Vec::new(),
            dump,
        }
    }

    fn dump(&mut self, mic: &[f32]) {
        use std::io::Write;
        if let Some(files) = self.dump.as_mut() {
            for (file, data) in files.iter_mut().zip([mic, &self.reference, &self.cleaned]) {
                for x in data {
                    let _ = file.write_all(&x.to_le_bytes());
                }
            }
        }
    }

    /// `mic_origin`: the wall time of microphone sample 0; `user_speaking`:
    /// the VAD is inside an utterance (see [`EchoGate::is_echo`]).
    fn clean(
        &mut self,
        frame: &mut Frame,
        mic_origin: Instant,
        user_speaking: bool,
    ) -> Result<(), AecError> {
        if self.offset.is_none() {
            let Some(ref_origin) = self.inner.reference.origin() else {
                return Ok(()); // nothing has been played yet: no echo
            };
            let secs = if mic_origin >= ref_origin {
                (mic_origin - ref_origin).as_secs_f64()
            } else {
                -(ref_origin - mic_origin).as_secs_f64()
            };
            let offset = (secs * SAMPLE_RATE as f64).round() as i64;
            tracing::debug!(
                offset_ms = offset / 16,
                "echo canceller aligned to playback"
            );
            self.offset = Some(offset);
        }
        let offset = self.offset.expect("set above");
        self.reference.resize(AEC_BLOCK, 0.0);
        self.cleaned.resize(AEC_BLOCK, 0.0);
        for (k, block) in frame.samples.chunks_mut(AEC_BLOCK).enumerate() {
            if block.len() != AEC_BLOCK {
                break; // frames are whole multiples of 10 ms
            }
            let index = (frame.start_sample + (k * AEC_BLOCK) as u64) as i64 + offset;
            self.inner.reference.read(index, &mut self.reference);
            self.inner
                .canceller
                .process(block, &self.reference, &mut self.cleaned)?;
            if self
                .gate
                .is_echo(&self.inner.reference, index, &self.cleaned, user_speaking)
            {
                self.cleaned.fill(0.0);
            }
            self.dump(block);
            block.copy_from_slice(&self.cleaned);
        }
        Ok(())
    }
}

fn ms(sample: u64) -> u64 {
    sample * 1000 / SAMPLE_RATE as u64
}

/// Reports on the utterance the VAD still has open: the speech so far, for
/// partial transcripts, and pauses worth a speculative final transcript.
struct SpeechInProgress {
    /// Samples of speech between partial reports; `None`: no partials.
    partial_every: Option<usize>,
    /// Audio length at the last partial report.
    reported: usize,
    /// Samples of silence after speech before speculating; `None`: never.
    speculate_after: Option<u64>,
    /// Speech end of the last speculation.
    speculated: Option<u64>,
    /// The utterance was pausing after the last frame.
    was_pausing: bool,
}

impl SpeechInProgress {
    fn new(vad: &VadConfig, partial_every_ms: Option<u32>, speculate_after_ms: u64) -> Self {
        Self {
            partial_every: partial_every_ms.map(|ms| samples(ms.into()) as usize),
            reported: 0,
            // Only worth it where the turn ends well after the pause.
            speculate_after: (u64::from(vad.end_silence_ms) > speculate_after_ms + 60)
                .then(|| samples(speculate_after_ms)),
            speculated: None,
            was_pausing: false,
        }
    }

    /// What to report after the segmenter took a frame.
    /// `now`: the end of the frame just pushed (samples).
    fn poll<C: SpeechClassifier>(
        &mut self,
        segmenter: &Segmenter<C>,
        now: u64,
    ) -> [Option<HearingEvent>; 3] {
        let Some(audio) = segmenter.speech_so_far() else {
            self.reported = 0;
            self.was_pausing = false;
            return [None, None, None];
        };
        let pausing = segmenter.pausing();
        let resumed = (self.was_pausing && pausing.is_none())
            .then(|| HearingEvent::SpeechResumed { at_ms: ms(now) });
        self.was_pausing = pausing.is_some();
        // A pause adds no words (and may be speculated on already).
        let partial = match self.partial_every {
            Some(every) if audio.len() >= self.reported + every && pausing.is_none() => {
                self.reported = audio.len();
                Some(HearingEvent::SpeechSoFar {
                    audio: audio.to_vec(),
                })
            }
            _ => None,
        };
        let pause = match (self.speculate_after, pausing) {
            (Some(after), Some((speech_end, silence)))
                if silence >= after && self.speculated != Some(speech_end) =>
            {
                self.speculated = Some(speech_end);
                Some(HearingEvent::SpeechPausing {
                    speech_end_ms: ms(speech_end),
                    audio: audio.to_vec(),
                })
            }
            _ => None,
        };
        [partial, pause, resumed]
    }
}

/// Smart Turn at the pauses, on a thread of its own ("hark-turn") so the
/// ears never wait for it: the pause is judged after `first_check_ms` of
/// silence (and, if `check_every_ms` is set, again that often while it
/// lasts); a complete turn ends the utterance at once.
pub struct Endpointing {
    pub detector: Box<dyn TurnDetector>,
    pub config: EndpointConfig,
    /// What the pause's transcript says, from the core (`[turn] read_words`).
    pub words: Arc<PauseWords>,
    /// Set by the core while Hark speaks. Speech over Hark is a candidate
    /// interruption that its words judge (a "mhm", "Wait, stop."), not a
    /// turn whose end Smart Turn must find: a pause of
    /// [`OVER_REPLY_PAUSE_MS`] ends it, so Hark is not held silent for
    /// seconds by a backchannel Smart Turn hears as unfinished.
    pub over_reply: Arc<AtomicBool>,
}

/// How the transcript of the speech before a pause reads
/// ([`hark_endpoint::read_words`]): written by the core when the pause's
/// speculative transcript arrives, read by the turn judge before it ends a
/// turn Smart Turn called complete, or asks an unsure Smart Turn again soon.
#[derive(Default)]
pub struct PauseWords(std::sync::Mutex<Option<(u64, Reading)>>);

impl PauseWords {
    /// The pause after `speech_end_ms` was transcribed and read so.
    pub fn heard(&self, speech_end_ms: u64, reading: Reading) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((speech_end_ms, reading));
    }

    /// How the words of the pause after `speech_end_ms` read, once heard.
    fn reading(&self, speech_end_ms: u64) -> Option<Reading> {
        match *self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((end, reading)) if end == speech_end_ms => Some(reading),
            _ => None,
        }
    }

    /// Whether the words of the pause after `speech_end_ms` stop where a
    /// request cannot, once heard.
    fn unfinished(&self, speech_end_ms: u64) -> Option<bool> {
        self.reading(speech_end_ms)
            .map(|reading| reading == Reading::Unfinished)
    }
}

/// While Hark speaks, a pause this long ends the speech over it (see
/// [`Endpointing::over_reply`]): longer than the comma in "Hold on, tell me
/// …", which must stay one interruption, and short enough that Hark, held
/// silent by a "mhm", resumes within about half a second.
const OVER_REPLY_PAUSE_MS: u64 = 500;

/// How long after Smart Turn called a pause complete the judge waits for
/// the pause's transcript before ending the turn without it (the final
/// transcript would take as long: this costs the reply nothing).
const WORDS_WAIT_MS: u64 = 500;

/// Silence Smart Turn hears after the speech when a pause is first judged:
/// what the VAD of pipecat, whose data it was trained on, leaves it.
const TURN_TRAILING_MS: usize = 200;
/// 10 ms blocks quieter than this share of the utterance's loudest (-20 dB
/// in amplitude) are not speech, for [`trim_for_turn`].
const TURN_QUIET_RATIO: f32 = 0.1;

/// Cuts `audio` [`TURN_TRAILING_MS`] after its last loud 10 ms block. The
/// model takes more silence as more finished, whatever the words (JFK's
/// "ask not what your country can do for you …": 0.04 with no silence,
/// 0.2 with 200 ms, 0.8 with 280 ms), and the VAD's own end of speech
/// trails the voice by a varying 50 to 150 ms: so the silence is measured
/// from the voice itself.
fn trim_for_turn(audio: &mut Vec<f32>) {
    let rms: Vec<f32> = audio
        .chunks(AEC_BLOCK)
        .map(|b| (b.iter().map(|s| s * s).sum::<f32>() / b.len() as f32).sqrt())
        .collect();
    let loudest = rms.iter().copied().fold(0.0, f32::max);
    let Some(last) = rms.iter().rposition(|r| *r > loudest * TURN_QUIET_RATIO) else {
        return;
    };
    let end = (last + 1) * AEC_BLOCK + TURN_TRAILING_MS * SAMPLE_RATE as usize / 1000;
    audio.truncate(end);
}

/// A judgement of the pause after `speech_end` (samples).
struct Judged {
    speech_end: u64,
    /// The pause's first check.
    first: bool,
    probability: Result<f32, String>,
    inference_ms: u64,
}

impl Judged {
    fn verdict(
        &self,
        probability: f32,
        complete: bool,
        unfinished_words: Option<bool>,
    ) -> HearingEvent {
        HearingEvent::TurnJudged {
            speech_end_ms: ms(self.speech_end),
            probability,
            inference_ms: self.inference_ms,
            complete,
            unfinished_words,
        }
    }
}

fn samples(ms: u64) -> u64 {
    ms * SAMPLE_RATE as u64 / 1000
}

struct TurnJudge {
    requests: SyncSender<(u64, bool, Vec<f32>)>,
    answers: Receiver<Judged>,
    first_check: u64,
    check_every: u64,
    threshold: f32,
    unsure_from: f32,
    unsure_recheck: u64,
    /// The pause whose first check was unsure: if its words read finished,
    /// it is asked again after `unsure_recheck`.
    unsure: Option<u64>,
    /// `None` when `[turn] read_words` is off.
    words: Option<Arc<PauseWords>>,
    over_reply: Arc<AtomicBool>,
    /// The pause last asked about, and how long it was then (samples).
    asked: Option<(u64, u64)>,
    /// A first "complete" waiting for the pause's words: the judgement,
    /// and the silence (samples) after which it ends the turn regardless.
    held: Option<(Judged, u64)>,
    in_flight: bool,
    _thread: JoinHandle<()>,
}

impl TurnJudge {
    fn spawn(endpointing: Endpointing) -> std::io::Result<Self> {
        let Endpointing {
            mut detector,
            config,
            words,
            over_reply,
        } = endpointing;
        let (requests, rx) = std::sync::mpsc::sync_channel::<(u64, bool, Vec<f32>)>(1);
        let (tx, answers) = std::sync::mpsc::sync_channel(2);
        let thread = std::thread::Builder::new()
            .name("hark-turn".into())
            .spawn(move || {
                for (speech_end, first, audio) in rx {
                    let started = Instant::now();
                    let probability = detector.complete(&audio).map_err(|e| e.to_string());
                    let judged = Judged {
                        speech_end,
                        first,
                        probability,
                        inference_ms: started.elapsed().as_millis() as u64,
                    };
                    if tx.send(judged).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            requests,
            answers,
            first_check: samples(config.first_check_ms.into()),
            check_every: samples(config.check_every_ms.into()),
            threshold: config.threshold as f32,
            unsure_from: config.unsure_from as f32,
            unsure_recheck: samples(config.unsure_recheck_ms.into()),
            unsure: None,
            words: config.read_words.then_some(words),
            over_reply,
            asked: None,
            held: None,
            in_flight: false,
            _thread: thread,
        })
    }

    /// Whether Smart Turn was unsure at the first check of the pause after
    /// `speech_end` and the words before it read as a finished sentence (a
    /// fragment of one or two words does not vouch for it).
    fn reads_unsure_but_finished(&self, speech_end: u64) -> bool {
        self.unsure_recheck > 0
            && self.unsure == Some(speech_end)
            && self.words.as_ref().and_then(|w| w.reading(ms(speech_end)))
                == Some(Reading::Finished)
    }

    /// Reads answers (ending the utterance when one says complete) and
    /// asks about the pause when it is due.
    fn poll<C: SpeechClassifier>(&mut self, segmenter: &mut Segmenter<C>) -> Vec<HearingEvent> {
        let mut events = Vec::new();
        while let Ok(judged) = self.answers.try_recv() {
            self.in_flight = false;
            let probability = match &judged.probability {
                Ok(p) => *p,
                Err(message) => {
                    // The silence rule still ends the turn.
                    tracing::warn!("Smart Turn failed: {message}");
                    continue;
                }
            };
            // The user may have gone on talking since it was asked.
            let Some((end, silence)) = segmenter
                .pausing()
                .filter(|(end, _)| *end == judged.speech_end)
            else {
                events.push(judged.verdict(probability, false, None));
                continue;
            };
            if probability < self.threshold {
                if judged.first && probability >= self.unsure_from {
                    self.unsure = Some(end);
                }
                events.push(judged.verdict(probability, false, None));
                continue;
            }
            // Complete. On the pause's first check, the words may overrule.
            match self.words.as_ref().filter(|_| judged.first) {
                Some(_) => self.held = Some((judged, silence + samples(WORDS_WAIT_MS))),
                None => {
                    events.push(judged.verdict(probability, true, None));
                    events.extend(segmenter.end_now().map(to_hearing));
                }
            }
        }
        if let Some((judged, deadline)) = self.held.take() {
            let words = self.words.as_ref().expect("held only when words are read");
            match segmenter.pausing() {
                Some((end, silence)) if end == judged.speech_end => {
                    let probability = *judged.probability.as_ref().expect("held when complete");
                    match words.unfinished(ms(end)) {
                        Some(true) => events.push(judged.verdict(probability, false, Some(true))),
                        unfinished @ Some(false) => {
                            events.push(judged.verdict(probability, true, unfinished));
                            events.extend(segmenter.end_now().map(to_hearing));
                        }
                        None if silence >= deadline => {
                            events.push(judged.verdict(probability, true, None));
                            events.extend(segmenter.end_now().map(to_hearing));
                        }
                        None => self.held = Some((judged, deadline)),
                    }
                }
                _ => {} // the user went on: nothing to end
            }
        }
        if self.over_reply.load(Ordering::Relaxed) {
            if let Some((_, silence)) = segmenter.pausing() {
                if silence >= self.first_check.max(samples(OVER_REPLY_PAUSE_MS)) {
                    self.held = None;
                    events.extend(segmenter.end_now().map(to_hearing));
                    return events;
                }
            }
        }
        if let (false, Some((speech_end, silence))) = (self.in_flight, segmenter.pausing()) {
            let first = !matches!(self.asked, Some((end, _)) if end == speech_end);
            let due = match self.asked {
                _ if first => silence >= self.first_check,
                Some((_, at)) => {
                    let every = if self.reads_unsure_but_finished(speech_end) {
                        self.unsure_recheck
                    } else {
                        self.check_every
                    };
                    every > 0 && silence >= at + every
                }
                None => false,
            };
            if due {
                let mut audio = segmenter.speech_so_far().unwrap_or_default().to_vec();
                if first {
                    trim_for_turn(&mut audio);
                }
                if self.requests.try_send((speech_end, first, audio)).is_ok() {
                    self.asked = Some((speech_end, silence));
                    if !first {
                        self.unsure = None;
                    }
                    self.in_flight = true;
                }
            }
        }
        events
    }
}

/// Starts "hark-hear". The `timeline`'s zero is set when the first frame
/// arrives, to the time of its sample 0, which every other thread measures
/// from. The source must be fresh (a device opened
/// just now, not one that has queued seconds of audio). `partial_every_ms`:
/// while the user talks, report the speech so far each time this much more
/// has been heard. `report` returning false, or `stop`, ends the thread.
#[allow(clippy::too_many_arguments)] // each is one part of the ears, named
pub fn spawn_hearing(
    mut source: Box<dyn FrameSource>,
    vad: VadConfig,
    echo: Option<EchoCancellation>,
    partial_every_ms: Option<u32>,
    endpointing: Option<Endpointing>,
    mut wake_word: Option<(Box<dyn hark_endpoint::WakeWordDetector>, Arc<AtomicBool>)>,
    timeline: Timeline,
    stop: Arc<AtomicBool>,
    mut report: impl FnMut(HearingEvent) -> bool + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let speculate_after_ms = if endpointing.is_some() {
        SPECULATE_BEFORE_SMART_TURN_MS
    } else {
        SPECULATE_AFTER_MS
    };
    let mut judge = endpointing.map(TurnJudge::spawn).transpose()?;
    std::thread::Builder::new()
        .name("hark-hear".into())
        .spawn(move || {
            let mut aec = echo.map(Aec::new);
            let result = (|| -> Result<(), String> {
                // WebRTC's VAD is not Send: it lives and dies on this thread.
                let mut in_progress =
                    SpeechInProgress::new(&vad, partial_every_ms, speculate_after_ms);
                let mut segmenter = Segmenter::webrtc(vad).map_err(|e| e.to_string())?;
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut frame) = source
                        .next_frame()
                        .map_err(|e| format!("reading audio from {}: {e}", source.describe()))?
                    else {
                        break;
                    };
                    // The first frame has just arrived, so its last sample
                    // was captured about now.
                    let zero = timeline.start(Duration::from_secs_f64(
                        frame.end_sample() as f64 / SAMPLE_RATE as f64,
                    ));
                    if let Some(aec) = aec.as_mut().filter(|_| source.hears_local_playback()) {
                        aec.clean(&mut frame, zero, segmenter.in_speech())
                            .map_err(|e| format!("echo cancellation: {e}"))?;
                    }
                    if let Some((detector, _)) = wake_word
                        .as_mut()
                        .filter(|(_, listening)| listening.load(Ordering::Relaxed))
                    {
                        match detector.push(&frame.samples) {
                            Ok(Some(score)) => {
                                let at_ms = ms(frame.end_sample());
                                if !report(HearingEvent::WakeWord { at_ms, score }) {
                                    return Ok(());
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!(
                                    "the wake word model failed, and is not listened to: {e}"
                                );
                                wake_word = None;
                            }
                        }
                    }
                    for event in segmenter.push(&frame).map_err(|e| e.to_string())? {
                        if !report(to_hearing(event)) {
                            return Ok(());
                        }
                    }
                    let now = frame.end_sample();
                    for event in in_progress.poll(&segmenter, now).into_iter().flatten() {
                        if !report(event) {
                            return Ok(());
                        }
                    }
                    if let Some(judge) = judge.as_mut() {
                        for event in judge.poll(&mut segmenter) {
                            if !report(event) {
                                return Ok(());
                            }
                        }
                    }
                }
                if let Some(event) = segmenter.finish() {
                    report(to_hearing(event));
                }
                Ok(())
            })();
            match result {
                Ok(()) => report(HearingEvent::Ended),
                Err(message) => report(HearingEvent::Failed(message)),
            };
        })
}

fn to_hearing(event: VadEvent) -> HearingEvent {
    match event {
        VadEvent::SpeechStart { at_sample } => HearingEvent::SpeechStarted {
            at_ms: ms(at_sample),
        },
        VadEvent::SpeechDiscarded { at_sample } => HearingEvent::SpeechDiscarded {
            at_ms: ms(at_sample),
        },
        VadEvent::SpeechEnd(u) => HearingEvent::SpeechEnded {
            start_ms: ms(u.speech_start_sample),
            at_ms: ms(u.speech_end_sample),
            audio: u.samples,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_audio::vad::VadError;

    /// Speech exactly where the script says, one decision per frame.
    struct Script(std::vec::IntoIter<bool>);

    impl SpeechClassifier for Script {
        fn is_speech(&mut self, _: &[i16]) -> Result<bool, VadError> {
            Ok(self.0.next().unwrap_or(false))
        }
    }

    /// Runs 10 ms frames through a segmenter with `decisions`, collecting
    /// what `SpeechInProgress` reports after each: (frame, event name).
    fn reports(
        vad: VadConfig,
        partial_every_ms: Option<u32>,
        decisions: &[bool],
    ) -> Vec<(usize, String)> {
        let mut in_progress = SpeechInProgress::new(&vad, partial_every_ms, SPECULATE_AFTER_MS);
        let mut segmenter = Segmenter::new(vad, Script(decisions.to_vec().into_iter())).unwrap();
        let mut out = Vec::new();
        for k in 0..decisions.len() + 50 {
            let frame = Frame {
                start_sample: (k * 160) as u64,
                samples: vec![0.0; 160],
            };
            segmenter.push(&frame).unwrap();
            for event in in_progress
                .poll(&segmenter, ((k + 1) * 160) as u64)
                .into_iter()
                .flatten()
            {
                let name = match event {
                    HearingEvent::SpeechSoFar { .. } => "partial".to_owned(),
                    HearingEvent::SpeechPausing { speech_end_ms, .. } => {
                        format!("pause@{speech_end_ms}")
                    }
                    HearingEvent::SpeechResumed { at_ms } => format!("resumed@{at_ms}"),
                    other => panic!("{other:?}"),
                };
                out.push((k, name));
            }
        }
        out
    }

    fn conversation_vad() -> VadConfig {
        VadConfig {
            frame_ms: 10,
            onset_ms: 90,
            end_silence_ms: 300,
            ..VadConfig::default()
        }
    }

    #[test]
    fn partials_come_every_interval_and_each_pause_is_speculated_once() {
        // 1.5 s of speech, a 200 ms pause, 1 s more, then silence.
        let mut decisions = vec![false; 10];
        decisions.extend([true; 150]);
        decisions.extend([false; 20]);
        decisions.extend([true; 100]);
        let got = reports(conversation_vad(), Some(1000), &decisions);
        let partials = got.iter().filter(|(_, n)| n == "partial").count();
        // At 1 and 2 s of audio; the third second ends in silence.
        assert_eq!(partials, 2, "{got:?}");
        let pauses: Vec<&str> = got
            .iter()
            .filter(|(_, n)| n != "partial")
            .map(|(_, n)| n.as_str())
            .collect();
        // The mid-sentence pause and the end, each once, 120 ms in; the
        // speech resuming after the first.
        assert_eq!(
            pauses,
            ["pause@1600", "resumed@1810", "pause@2800"],
            "{got:?}"
        );
        let first_pause = got.iter().find(|(_, n)| n == "pause@1600").unwrap().0;
        assert_eq!(first_pause, 160 + 12 - 1);
    }

    #[test]
    fn nothing_is_reported_without_partials_or_room_to_speculate() {
        let mut decisions = vec![false; 10];
        decisions.extend([true; 150]);
        let quick_end = VadConfig {
            end_silence_ms: 150,
            ..conversation_vad()
        };
        assert_eq!(reports(quick_end, None, &decisions), []);
    }

    /// Smart Turn's answers, in order; the last one from then on.
    struct Answers(Vec<f32>);

    impl TurnDetector for Answers {
        fn complete(&mut self, _: &[f32]) -> Result<f32, hark_endpoint::EndpointError> {
            Ok(if self.0.len() > 1 {
                self.0.remove(0)
            } else {
                self.0[0]
            })
        }
    }

    /// 1.5 s of speech then silence, judged with Smart Turn sure it is
    /// complete; `words`: how far into the silence (ms) the pause's words
    /// are read and how they read (`None`: never). Returns the silence (ms)
    /// at which the turn ended.
    fn turn_ended_after(words: Option<(u64, Reading)>) -> Option<u64> {
        judged_turn_ended_after(&[0.9], words)
    }

    /// The same with Smart Turn's `answers`.
    fn judged_turn_ended_after(answers: &[f32], words: Option<(u64, Reading)>) -> Option<u64> {
        judged_over_reply(answers, words, false)
    }

    /// The same, `over_reply`: with Hark speaking.
    fn judged_over_reply(
        answers: &[f32],
        words: Option<(u64, Reading)>,
        over_reply: bool,
    ) -> Option<u64> {
        let config = EndpointConfig {
            first_check_ms: 160,
            check_every_ms: 1000,
            ..EndpointConfig::default()
        };
        let pause_words = Arc::new(PauseWords::default());
        let mut judge = TurnJudge::spawn(Endpointing {
            detector: Box::new(Answers(answers.to_vec())),
            config,
            words: pause_words.clone(),
            over_reply: Arc::new(AtomicBool::new(over_reply)),
        })
        .unwrap();
        let mut decisions = vec![false; 10];
        decisions.extend([true; 150]);
        let vad = VadConfig {
            end_silence_ms: 2000,
            ..conversation_vad()
        };
        let mut segmenter = Segmenter::new(vad, Script(decisions.clone().into_iter())).unwrap();
        for k in 0..decisions.len() + 300 {
            let frame = Frame {
                start_sample: (k * 160) as u64,
                samples: vec![0.0; 160],
            };
            let mut events: Vec<HearingEvent> = segmenter
                .push(&frame)
                .unwrap()
                .into_iter()
                .map(to_hearing)
                .collect();
            let silence_ms = (k + 1).saturating_sub(decisions.len()) as u64 * 10;
            if let (Some((after, reading)), Some((end, _))) = (words, segmenter.pausing()) {
                if silence_ms == after {
                    pause_words.heard(ms(end), reading);
                }
            }
            loop {
                events.extend(judge.poll(&mut segmenter));
                if !judge.in_flight {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if events
                .iter()
                .any(|e| matches!(e, HearingEvent::SpeechEnded { .. }))
            {
                return Some(silence_ms);
            }
        }
        None
    }

    #[test]
    fn words_that_stop_where_a_request_cannot_keep_the_turn_open() {
        use Reading::*;
        // Finished words, or a fragment: Smart Turn's first "complete" ends
        // the turn.
        assert_eq!(turn_ended_after(Some((100, Finished))), Some(160));
        assert_eq!(turn_ended_after(Some((100, Fragment))), Some(160));
        // Unfinished words: only its next check, 1 s later, ends it.
        assert_eq!(turn_ended_after(Some((100, Unfinished))), Some(1160));
        // Words read after the verdict: the turn ends when they come.
        assert_eq!(turn_ended_after(Some((300, Finished))), Some(300));
        assert_eq!(turn_ended_after(Some((300, Unfinished))), Some(1160));
        // No words at all: it ends WORDS_WAIT_MS after the verdict.
        assert_eq!(turn_ended_after(None), Some(160 + WORDS_WAIT_MS));
    }

    #[test]
    fn speech_over_hark_ends_at_a_half_second_pause_whatever_smart_turn_says() {
        // Smart Turn would call it unfinished twice; over Hark its words
        // judge it, after OVER_REPLY_PAUSE_MS.
        assert_eq!(
            judged_over_reply(&[0.02, 0.02, 0.9], None, true),
            Some(OVER_REPLY_PAUSE_MS)
        );
        // With Hark silent, only the long silence (2 s here) ends it.
        assert_eq!(
            judged_over_reply(&[0.02, 0.02, 0.9], None, false),
            Some(2000)
        );
    }

    #[test]
    fn an_unsure_smart_turn_is_asked_again_soon_when_the_words_read_finished() {
        use Reading::*;
        let unsure_then_sure = [0.3, 0.9];
        // A finished sentence: asked again 150 ms after the first check.
        assert_eq!(
            judged_turn_ended_after(&unsure_then_sure, Some((100, Finished))),
            Some(310)
        );
        // Unfinished words, a fragment ("ask not"), or none: after
        // check_every_ms.
        for words in [Some((100, Unfinished)), Some((100, Fragment)), None] {
            assert_eq!(
                judged_turn_ended_after(&unsure_then_sure, words),
                Some(1160),
                "{words:?}"
            );
        }
        // Sure it is unfinished (below unsure_from): after check_every_ms.
        assert_eq!(
            judged_turn_ended_after(&[0.05, 0.9], Some((100, Finished))),
            Some(1160)
        );
    }

    #[test]
    fn smart_turn_hears_the_speech_and_200_ms_of_silence() {
        let tone: Vec<f32> = (0..8000).map(|i| (i as f32 * 0.1).sin() * 0.3).collect();
        let mut audio = tone.clone();
        // A faint tail (-30 dB) is not speech; then silence.
        audio.extend(std::iter::repeat_n(0.01, 800));
        audio.extend(std::iter::repeat_n(0.0, 8000));
        trim_for_turn(&mut audio);
        assert_eq!(audio.len(), 8000 + 3200);
        // Already short of 200 ms: nothing to cut.
        let mut short = tone.clone();
        short.extend(std::iter::repeat_n(0.0, 1000));
        trim_for_turn(&mut short);
        assert_eq!(short.len(), 9000);
        let mut silent = vec![0.0; 4000];
        trim_for_turn(&mut silent);
        assert_eq!(silent.len(), 4000);
    }
}
