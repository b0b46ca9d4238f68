//! Skills that need no model: what a voice assistant must get exactly
//! right, answered from the transcript in microseconds, with every backend
//! and in every mode.
//!
//! - [`intent`]: the phrase table and matcher ([`understand`]).
//! - [`numbers`]: number words and spoken durations.
//! - [`Skills`]: answers an [`Intent`] (time, date, timers, stop, repeat,
//!   louder/quieter) and owns what must outlive a restart: timers and the
//!   output gain, kept in a state file readable by its owner only.
//!
//! The conversation core asks [`Skills::answer`] before any model sees a
//! transcript, fires [`Skills::due`] timers from its tick, and takes
//! `SetTimer`/`CancelTimer` commands; the time comes from the caller, so
//! tests run on any clock.

pub mod intent;
pub mod numbers;
mod settings;
pub mod tools;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use intent::{is_stop, understand, Intent};
pub use settings::SkillsConfig;

use numbers::say_duration;

/// Most timers running at once.
const MAX_TIMERS: usize = 20;
/// Output gain limits and the step of "louder"/"quieter" (about 3 dB).
const MIN_GAIN: f32 = 0.25;
const MAX_GAIN: f32 = 2.0;
const GAIN_STEP: f32 = std::f32::consts::SQRT_2;

/// A running timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: String,
    /// What it is for ("tea"); empty when not named.
    pub label: String,
    /// When it goes off, in ms since the Unix epoch.
    pub due_unix_ms: u64,
    /// How long it was set for.
    pub length_ms: u64,
}

impl Timer {
    /// "the tea timer" or "the timer".
    pub fn name(&self) -> String {
        if self.label.is_empty() {
            "the timer".into()
        } else {
            format!("the {} timer", self.label)
        }
    }

    pub fn remaining(&self, now_unix_ms: u64) -> Duration {
        Duration::from_millis(self.due_unix_ms.saturating_sub(now_unix_ms))
    }
}

/// What outlives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SkillState {
    pub timers: Vec<Timer>,
    /// Hark's own output gain (1.0: as synthesized).
    pub output_gain: f32,
    next_id: u64,
}

impl Default for SkillState {
    fn default() -> Self {
        Self {
            timers: Vec::new(),
            output_gain: 1.0,
            next_id: 1,
        }
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state file {} is not valid ({message}); starting afresh", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write the state file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the core should act on a skill's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// What to say; `None`: say nothing and forget the request (stop).
    pub say: Option<String>,
    /// A new output gain for the speaker.
    pub gain: Option<f32>,
    /// The timers changed (publish them).
    pub timers_changed: bool,
}

impl Answer {
    fn say(text: impl Into<String>) -> Self {
        Self {
            say: Some(text.into()),
            gain: None,
            timers_changed: false,
        }
    }
}

/// See the crate documentation.
#[derive(Debug)]
pub struct Skills {
    config: SkillsConfig,
    state: SkillState,
    /// Where the state is kept; `None`: in memory only.
    file: Option<PathBuf>,
    zone: jiff::tz::TimeZone,
}

impl Skills {
    /// Skills with `config`, their state read from `file` (if given and
    /// present). A state file that cannot be read is reported and
    /// replaced, never fatal.
    pub fn new(config: SkillsConfig, file: Option<PathBuf>) -> (Self, Option<StateError>) {
        let (state, problem) = match &file {
            Some(path) => match load(path) {
                Ok(state) => (state, None),
                Err(e) => (SkillState::default(), Some(e)),
            },
            None => (SkillState::default(), None),
        };
        let zone = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
        let skills = Self {
            config,
            state,
            file,
            zone,
        };
        (skills, problem)
    }

    /// The time zone local times are told in (tests pin it).
    pub fn set_time_zone(&mut self, zone: jiff::tz::TimeZone) {
        self.zone = zone;
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn timers(&self) -> &[Timer] {
        &self.state.timers
    }

    pub fn output_gain(&self) -> f32 {
        self.state.output_gain
    }

    /// The answer to `transcript`, if a skill claims it. `last_reply`: what
    /// Hark said last (for "repeat that").
    pub fn answer(
        &mut self,
        transcript: &str,
        now_unix_ms: u64,
        last_reply: Option<&str>,
    ) -> Option<Answer> {
        if !self.config.enabled {
            return None;
        }
        let intent = understand(transcript)?;
        tracing::debug!(?intent, transcript, "a skill answers");
        Some(self.act(intent, now_unix_ms, last_reply))
    }

    fn act(&mut self, intent: Intent, now: u64, last_reply: Option<&str>) -> Answer {
        match intent {
            Intent::Time => Answer::say(format!("It's {}.", self.local(now).strftime("%-I:%M %p"))),
            Intent::Date => Answer::say(format!(
                "Today is {}.",
                self.local(now).strftime("%A, %B %-d, %Y")
            )),
            Intent::SetTimer { seconds, label } => {
                let label = label.unwrap_or_default();
                match self.set_timer(seconds, &label, now) {
                    Ok(timer) => {
                        let length = say_duration(Duration::from_millis(timer.length_ms));
                        let what = if timer.label.is_empty() {
                            "Timer".to_owned()
                        } else {
                            format!("{} timer", capitalised(&timer.label))
                        };
                        Answer {
                            timers_changed: true,
                            ..Answer::say(format!("{what} set for {length}."))
                        }
                    }
                    Err(why) => Answer::say(why),
                }
            }
            Intent::TimeLeft => Answer::say(self.time_left(now)),
            Intent::CancelTimer { label } => match self.cancel(label.as_deref()) {
                Ok(timer) => Answer {
                    timers_changed: true,
                    ..Answer::say(format!("{} is cancelled.", capitalised(&timer.name())))
                },
                Err(why) => Answer::say(why),
            },
            Intent::Stop => Answer {
                say: None,
                gain: None,
                timers_changed: false,
            },
            Intent::Repeat => Answer::say(match last_reply {
                Some(text) if !text.trim().is_empty() => text.to_owned(),
                _ => "I haven't said anything yet.".to_owned(),
            }),
            Intent::Louder => {
                self.change_gain(GAIN_STEP, "Okay, louder.", "That's as loud as I go.")
            }
            Intent::Quieter => self.change_gain(
                1.0 / GAIN_STEP,
                "Okay, quieter.",
                "That's as quiet as I go.",
            ),
        }
    }

    pub(crate) fn local(&self, now_unix_ms: u64) -> jiff::ZonedDateTime {
        let ts = jiff::Timestamp::from_millisecond(now_unix_ms as i64)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        ts.to_zoned_datetime(self.zone.clone())
    }

    fn change_gain(&mut self, factor: f32, done: &str, at_limit: &str) -> Answer {
        let gain = (self.state.output_gain * factor).clamp(MIN_GAIN, MAX_GAIN);
        if (gain - self.state.output_gain).abs() < 1e-3 {
            return Answer::say(at_limit);
        }
        self.state.output_gain = gain;
        self.save();
        Answer {
            gain: Some(gain),
            ..Answer::say(done)
        }
    }

    pub(crate) fn time_left(&self, now: u64) -> String {
        let timers = &self.state.timers;
        if timers.is_empty() {
            return "There are no timers.".into();
        }
        let parts: Vec<String> = timers
            .iter()
            .map(|t| format!("{} left on {}", say_duration(t.remaining(now)), t.name()))
            .collect();
        format!("{}.", capitalised(&parts.join(", and ")))
    }

    /// Sets a timer of `seconds` called `label`; refused with a spoken
    /// reason when zero, negative, absurdly long or one too many.
    pub fn set_timer(
        &mut self,
        seconds: f64,
        label: &str,
        now_unix_ms: u64,
    ) -> Result<Timer, String> {
        let max_secs = f64::from(self.config.max_timer_hours) * 3600.0;
        if !seconds.is_finite() || seconds < 1.0 {
            return Err("A timer needs a length of at least a second, like five minutes.".into());
        }
        if seconds > max_secs {
            return Err(format!(
                "I can only set timers of up to {}.",
                say_duration(Duration::from_secs_f64(max_secs))
            ));
        }
        if self.state.timers.len() >= MAX_TIMERS {
            return Err(format!(
                "There are already {MAX_TIMERS} timers; cancel one first."
            ));
        }
        let label: String = label.trim().chars().take(60).collect();
        let length_ms = (seconds * 1000.0).round() as u64;
        let timer = Timer {
            id: format!("t{}", self.state.next_id),
            label,
            due_unix_ms: now_unix_ms + length_ms,
            length_ms,
        };
        self.state.next_id += 1;
        self.state.timers.push(timer.clone());
        self.state.timers.sort_by_key(|t| t.due_unix_ms);
        self.save();
        Ok(timer)
    }

    /// Cancels the timer with this id.
    pub fn cancel_timer(&mut self, id: &str) -> Result<Timer, String> {
        let at = self
            .state
            .timers
            .iter()
            .position(|t| t.id == id)
            .ok_or_else(|| format!("there is no timer {id:?}"))?;
        let timer = self.state.timers.remove(at);
        self.save();
        Ok(timer)
    }

    /// Cancels the timer called `label`, or the only one, or the one set
    /// last.
    pub(crate) fn cancel(&mut self, label: Option<&str>) -> Result<Timer, String> {
        let timers = &self.state.timers;
        let at = match label {
            Some(label) => timers
                .iter()
                .position(|t| t.label.eq_ignore_ascii_case(label))
                .ok_or_else(|| format!("There is no {label} timer."))?,
            None if timers.is_empty() => return Err("There are no timers.".into()),
            None => timers
                .iter()
                .enumerate()
                .max_by_key(|(_, t)| t.id[1..].parse::<u64>().unwrap_or(0))
                .map(|(i, _)| i)
                .unwrap_or(0),
        };
        let timer = self.state.timers.remove(at);
        self.save();
        Ok(timer)
    }

    /// Removes and returns the timers due at `now_unix_ms`.
    pub fn due(&mut self, now_unix_ms: u64) -> Vec<Timer> {
        if !self
            .state
            .timers
            .iter()
            .any(|t| t.due_unix_ms <= now_unix_ms)
        {
            return Vec::new();
        }
        let (due, running) = std::mem::take(&mut self.state.timers)
            .into_iter()
            .partition(|t| t.due_unix_ms <= now_unix_ms);
        self.state.timers = running;
        self.save();
        due
    }

    fn save(&self) {
        if let Some(path) = &self.file {
            if let Err(e) = save(path, &self.state) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// "The tea timer" from "the tea timer".
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What a timer says when it goes off.
pub fn timer_done(timer: &Timer) -> String {
    if timer.label.is_empty() {
        format!(
            "Your {} timer is done.",
            say_duration(Duration::from_millis(timer.length_ms))
        )
    } else {
        format!("Your {} timer is done.", timer.label)
    }
}

fn load(path: &Path) -> Result<SkillState, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SkillState::default()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut state: SkillState = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    state.output_gain = if state.output_gain.is_finite() {
        state.output_gain.clamp(MIN_GAIN, MAX_GAIN)
    } else {
        1.0
    };
    let highest = state
        .timers
        .iter()
        .filter_map(|t| t.id.strip_prefix('t')?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    state.next_id = state.next_id.max(highest + 1);
    Ok(state)
}

/// Writes `state` to `path` (mode 0600), by way of a file beside it, so a
/// crash mid-write never leaves half a file.
fn save(path: &Path, state: &SkillState) -> Result<(), StateError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        // Timers' labels are the user's words: the directory is theirs.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    let partial = path.with_extension("json.partial");
    let text = serde_json::to_string_pretty(state).expect("the state serialises");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}

#[cfg(test)]
mod tests;
