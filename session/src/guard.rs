//! A panic inside an engine is one failed job, not a dead worker: each of
//! the session's models is wrapped so that a panic in Whisper, the language
//! model or the voice becomes that job's error. The core then ends the turn
//! as for any other failure (a spoken fallback and an `Error` event), and
//! the worker thread takes the next job.
//!
//! [`Faults`] makes chosen calls panic on purpose, so the tests can show
//! this through the real daemon (`HARK_INJECT_PANIC`, see the README).

use std::any::Any;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use hark_llm::{CancelHandle, ChatMessage, Generation, LlmError, TokenGenerator, ToolBox};
use hark_stt::{SpeechToText, SttError, Transcript};
use hark_tts::{TtsError, Voice};

/// A stage of the pipeline that can be made to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Stt,
    Llm,
    Tts,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Stt => "stt",
            Stage::Llm => "llm",
            Stage::Tts => "tts",
        }
    }
}

/// Which calls panic on purpose: `(stage, n)` makes the stage's n-th call
/// (counting from 1) panic. Empty in normal use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults(Vec<(Stage, u32)>);

impl Faults {
    /// Parses `stage:n[,stage:n…]`, stages `stt`, `llm`, `tts`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut faults = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (stage, call) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?} is not stage:call (e.g. llm:1)"))?;
            let stage = match stage {
                "stt" => Stage::Stt,
                "llm" => Stage::Llm,
                "tts" => Stage::Tts,
                other => return Err(format!("unknown stage {other:?} (stt, llm or tts)")),
            };
            let call = call
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{call:?} in {item:?} is not a call number from 1"))?;
            faults.push((stage, call));
        }
        Ok(Self(faults))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn calls_of(&self, stage: Stage) -> Vec<u32> {
        self.0
            .iter()
            .filter(|(s, _)| *s == stage)
            .map(|&(_, n)| n)
            .collect()
    }
}

/// An engine whose panics are caught, and which panics itself on the calls
/// [`Faults`] names.
pub struct Guarded<M> {
    inner: M,
    stage: Stage,
    panic_on: Vec<u32>,
    calls: u32,
}

impl<M> Guarded<M> {
    pub fn new(inner: M, stage: Stage, faults: &Faults) -> Self {
        Self {
            inner,
            stage,
            panic_on: faults.calls_of(stage),
            calls: 0,
        }
    }

    /// Runs one call of the engine; a panic comes back as the message
    /// "the … engine panicked: …".
    fn call<T>(&mut self, work: impl FnOnce(&mut M) -> T) -> Result<T, String> {
        self.calls += 1;
        let inject = self.panic_on.contains(&self.calls);
        let (stage, call) = (self.stage.name(), self.calls);
        let inner = &mut self.inner;
        catch_unwind(AssertUnwindSafe(move || {
            if inject {
                panic!("injected panic in {stage} call {call} (HARK_INJECT_PANIC)");
            }
            work(inner)
        }))
        .map_err(|payload| {
            let why = panic_message(payload.as_ref());
            tracing::error!(stage, call, "the {stage} engine panicked: {why}");
            format!("the {stage} engine panicked: {why}")
        })
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl SpeechToText for Guarded<Box<dyn SpeechToText>> {
    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript, SttError> {
        let seconds = samples.len() as f32 / 16_000.0;
        self.call(|stt| stt.transcribe(samples))
            .unwrap_or_else(|message| Err(SttError::Inference { seconds, message }))
    }

    fn take_notice(&mut self) -> Option<String> {
        self.inner.take_notice()
    }
}

impl TokenGenerator for Guarded<Box<dyn TokenGenerator>> {
    fn generate(
        &mut self,
        history: &[ChatMessage],
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
        cancel: &CancelHandle,
    ) -> Result<Generation, LlmError> {
        self.call(|llm| llm.generate(history, on_token, cancel))
            .unwrap_or_else(|message| Err(LlmError::Inference(message)))
    }

    fn offer_tools(&mut self, tools: Box<dyn ToolBox>) -> bool {
        self.inner.offer_tools(tools)
    }

    /// Not counted as a call: injected faults are numbered by replies.
    fn warm(&mut self, history: &[ChatMessage], unfinished: &str, cancel: &CancelHandle) {
        let inner = &mut self.inner;
        let read = catch_unwind(AssertUnwindSafe(move || {
            inner.warm(history, unfinished, cancel)
        }));
        if let Err(payload) = read {
            let stage = self.stage.name();
            let why = panic_message(payload.as_ref());
            tracing::error!(stage, "the {stage} engine panicked reading ahead: {why}");
        }
    }
}

impl Voice for Guarded<Box<dyn Voice>> {
    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
        self.call(|voice| voice.synthesize(text))
            .unwrap_or_else(|message| Err(TtsError::Inference(message)))
    }

    fn take_notice(&mut self) -> Option<String> {
        self.inner.take_notice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Voice for Echo {
        fn sample_rate(&self) -> u32 {
            16_000
        }
        fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
            if text == "boom" {
                panic!("the voice broke on {text:?}");
            }
            Ok(vec![0.5; text.len()])
        }
    }

    #[test]
    fn a_panic_is_that_call_s_error_and_the_next_call_works() {
        let mut voice = Guarded::new(
            Box::new(Echo) as Box<dyn Voice>,
            Stage::Tts,
            &Faults::default(),
        );
        let err = voice.synthesize("boom").unwrap_err().to_string();
        assert!(
            err.contains("the tts engine panicked: the voice broke on \"boom\""),
            "{err}"
        );
        assert_eq!(voice.synthesize("ok").unwrap().len(), 2);
    }

    #[test]
    fn injected_faults_panic_on_the_named_calls_only() {
        let faults = Faults::parse("tts:2, llm:1,tts:3").unwrap();
        let mut voice = Guarded::new(Box::new(Echo) as Box<dyn Voice>, Stage::Tts, &faults);
        let results: Vec<bool> = (0..4).map(|_| voice.synthesize("hi").is_ok()).collect();
        assert_eq!(results, [true, false, false, true]);
        let err = Guarded::new(
            Box::new(Echo) as Box<dyn Voice>,
            Stage::Tts,
            &Faults::parse("tts:1").unwrap(),
        )
        .synthesize("hi")
        .unwrap_err()
        .to_string();
        assert!(err.contains("injected panic in tts call 1"), "{err}");
    }

    #[test]
    fn a_bad_fault_spec_says_what_is_wrong() {
        assert!(Faults::parse("").unwrap().is_empty());
        for (spec, says) in [
            ("llm", "is not stage:call"),
            ("gpu:1", "unknown stage \"gpu\""),
            ("stt:0", "not a call number"),
            ("stt:x", "not a call number"),
        ] {
            let err = Faults::parse(spec).unwrap_err();
            assert!(err.contains(says), "{spec}: {err}");
        }
    }
}
