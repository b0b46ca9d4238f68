//! Hark as a Wyoming satellite: while Home Assistant runs it
//! (`run-satellite`), Home Assistant hears and answers in Hark's place.
//!
//! Hark keeps its ears and its manners: its VAD, echo canceller and turn
//! judge decide when the user has spoken, and its turn machine plays the
//! answer and handles barge-in. What changes is who transcribes and who
//! answers: each user utterance goes to the pipeline
//! ([`SatellitePipeline::run`]: `run-pipeline`, the audio) instead of
//! Whisper; Home Assistant's `transcript` comes back as the user's turn,
//! its `synthesize` text as the reply, and its audio as the reply's voice.
//! The audio is one stream for the whole reply, so it is shared among the
//! reply's clauses by their length in letters: what is kept in history
//! when the user talks over it is cut where the speech was, near enough.
//! Speech over Hark is still judged by the local Whisper (a "mhm" must
//! not start a pipeline), and no transcript is speculated or partial.

use std::collections::VecDeque;

use hark_converse::chunk::{ChunkConfig, ClauseSplitter};
use hark_converse::turn::{ClauseId, Event, ReplyId, UtteranceId};

/// The way out to the pipeline; the binary's end writes Wyoming events.
/// Called on the core's thread: it must only queue, never block.
pub trait SatellitePipeline: Send {
    /// The user's utterance, 16 kHz mono: run the pipeline on it.
    fn run(&mut self, audio: &[f32]);
    /// The reply has been played (or talked over).
    fn played(&mut self);
}

/// What the pipeline's end sends the core ([`crate::core::Command::Satellite`]).
pub enum SatelliteEvent {
    /// Home Assistant started running Hark as its satellite.
    Attach(Box<dyn SatellitePipeline>),
    /// …and stopped, or went away.
    Detach,
    /// What the pipeline heard.
    Transcript(String),
    /// What it answers.
    Reply(String),
    /// The answer's voice, mono, any rate.
    Audio { pcm: Vec<f32>, rate: u32 },
    /// The pipeline failed or gave up.
    Failed(String),
}

impl std::fmt::Debug for SatelliteEvent {
    // Never the samples: commands are logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SatelliteEvent::Attach(_) => f.write_str("Attach"),
            SatelliteEvent::Detach => f.write_str("Detach"),
            SatelliteEvent::Transcript(t) => write!(f, "Transcript({t:?})"),
            SatelliteEvent::Reply(t) => write!(f, "Reply({t:?})"),
            SatelliteEvent::Audio { pcm, rate } => {
                write!(f, "Audio({} samples at {rate} Hz)", pcm.len())
            }
            SatelliteEvent::Failed(m) => write!(f, "Failed({m:?})"),
        }
    }
}

/// The core's side of a running satellite.
pub(crate) struct Satellite {
    pub pipeline: Box<dyn SatellitePipeline>,
    /// The utterance whose transcript the pipeline owes.
    pub awaiting_transcript: Option<UtteranceId>,
    /// The next reply the turn machine starts answers the pipeline's
    /// transcript.
    pub answers_next: bool,
    /// That reply, once started, until it is played.
    pub reply: Option<ReplyId>,
    /// The pipeline's answer, if it came before the reply started.
    pub early_text: Option<String>,
    /// The reply's clauses as the turn machine will cut them, each with its
    /// share of the audio (letters before it, its letters).
    expected: VecDeque<(String, usize, usize)>,
    total_letters: usize,
    /// Clauses asked for before the audio came.
    waiting: Vec<(ClauseId, usize, usize)>,
    /// The answer's audio at the speaker's rate.
    audio: Option<Vec<f32>>,
}

impl Satellite {
    pub fn new(pipeline: Box<dyn SatellitePipeline>) -> Self {
        Self {
            pipeline,
            awaiting_transcript: None,
            answers_next: false,
            reply: None,
            early_text: None,
            expected: VecDeque::new(),
            total_letters: 0,
            waiting: Vec::new(),
            audio: None,
        }
    }

    /// The reply's text is known: the clauses the turn machine will ask
    /// for, from the same splitter.
    pub fn expect(&mut self, chunking: &ChunkConfig, text: &str) {
        let clauses = ClauseSplitter::split(chunking.clone(), text);
        let mut before = 0;
        self.expected = clauses
            .into_iter()
            .map(|clause| {
                let letters = clause
                    .chars()
                    .filter(|c| c.is_alphanumeric())
                    .count()
                    .max(1);
                let entry = (clause, before, letters);
                before += letters;
                entry
            })
            .collect();
        self.total_letters = before.max(1);
        self.waiting.clear();
        self.audio = None;
    }

    /// Takes a `Synthesize` that is one of the reply's clauses; the audio
    /// that is ready for it now, if any.
    pub fn claim(&mut self, clause: ClauseId, text: &str) -> Option<Option<Vec<f32>>> {
        let (expected, before, letters) = self.expected.front()?;
        if expected != text {
            return None;
        }
        let (before, letters) = (*before, *letters);
        self.expected.pop_front();
        match &self.audio {
            Some(audio) => Some(Some(self.share(audio, before, letters))),
            None => {
                self.waiting.push((clause, before, letters));
                Some(None)
            }
        }
    }

    /// The answer's audio came: the clauses that waited for it, with
    /// theirs.
    pub fn audio_arrived(&mut self, audio: Vec<f32>) -> Vec<(ClauseId, Vec<f32>)> {
        let ready = self
            .waiting
            .drain(..)
            .map(|(clause, before, letters)| (clause, before, letters))
            .collect::<Vec<_>>();
        let shares = ready
            .into_iter()
            .map(|(clause, before, letters)| (clause, self.share(&audio, before, letters)))
            .collect();
        self.audio = Some(audio);
        shares
    }

    fn share(&self, audio: &[f32], before: usize, letters: usize) -> Vec<f32> {
        let at = |letters: usize| audio.len() * letters / self.total_letters;
        let (start, end) = (at(before), at(before + letters));
        // The last clause takes what rounding left.
        let end = if before + letters >= self.total_letters {
            audio.len()
        } else {
            end
        };
        audio[start.min(audio.len())..end.min(audio.len())].to_vec()
    }

    /// What the turn machine is owed when the pipeline will not answer
    /// (it failed, or Home Assistant left): an empty transcript for the
    /// utterance it heard, the end of the reply, and a failed synthesis for
    /// each clause still waiting for audio. Ready for the next turn after.
    pub fn abandon(&mut self) -> Vec<Event> {
        let mut owed = Vec::new();
        if let Some(utterance) = self.awaiting_transcript.take() {
            owed.push(Event::Transcript {
                utterance,
                text: String::new(),
            });
        }
        if let Some(reply) = self.reply {
            owed.push(Event::ReplyFinished { reply });
        }
        owed.extend(
            self.waiting
                .iter()
                .map(|(clause, _, _)| Event::SynthesisFailed { clause: *clause }),
        );
        self.answers_next = false;
        self.reset_reply();
        owed
    }

    /// The reply is over (played, talked over or failed): ready for the
    /// next.
    pub fn reset_reply(&mut self) {
        self.reply = None;
        self.early_text = None;
        self.expected.clear();
        self.waiting.clear();
        self.audio = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;
    impl SatellitePipeline for Nowhere {
        fn run(&mut self, _: &[f32]) {}
        fn played(&mut self) {}
    }

    #[test]
    fn the_answer_s_audio_is_shared_among_its_clauses_by_their_letters() {
        let mut satellite = Satellite::new(Box::new(Nowhere));
        let chunking = ChunkConfig::default();
        let text = "Paris is the capital of France. It is on the Seine, a long river.";
        satellite.expect(&chunking, text);
        let clauses: Vec<String> = satellite.expected.iter().map(|e| e.0.clone()).collect();
        assert!(clauses.len() >= 2, "{clauses:?}");
        // The first clause is asked for before the audio comes.
        assert_eq!(satellite.claim(1, &clauses[0]), Some(None));
        assert_eq!(satellite.claim(9, "something else"), None);
        let audio: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let first = satellite.audio_arrived(audio.clone());
        assert_eq!(first.len(), 1);
        let mut heard = first[0].1.clone();
        for (i, clause) in clauses.iter().enumerate().skip(1) {
            heard.extend(satellite.claim(i as u64 + 1, clause).unwrap().unwrap());
        }
        assert_eq!(heard, audio, "every sample once, in order");
        assert!(!first[0].1.is_empty() && first[0].1.len() < audio.len());
    }
}
