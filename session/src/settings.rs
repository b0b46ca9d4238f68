//! `[audio]`: which devices a session uses, and echo cancellation.

use hark_config::{check_range, doc, unset, InvalidValue, KeyDoc, Section, Settings};
use serde::{Deserialize, Serialize};

/// The `[audio]` section of Hark's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// Capture device name as `hark devices` lists it; `None`: the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_device: Option<String>,
    /// Playback device name; `None`: the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_device: Option<String>,
    /// Remove Hark's own voice from the microphone signal, so it can be
    /// interrupted over loudspeakers. Applies only to inputs that can hear
    /// the local speaker (not files, not streams).
    pub echo_cancellation: bool,
    /// Longest echo path (speaker → room → microphone) cancelled: device
    /// buffers both ways plus a room.
    pub echo_tail_ms: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            input_device: None,
            output_device: None,
            echo_cancellation: true,
            echo_tail_ms: 400,
        }
    }
}

impl Settings for AudioConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_range("echo_tail_ms", self.echo_tail_ms, 50, 2_000)
    }
}

impl Section for AudioConfig {
    const DOC: &'static str = "Microphone and speaker.";
    const KEYS: &'static [KeyDoc] = &[
        unset(
            "input_device",
            "Capture device, as `hark devices` lists it. Unset: the system default \
             (PulseAudio/PipeWire's default source).",
            "\"default\"",
        ),
        unset(
            "output_device",
            "Playback device, as `hark devices` lists it. Unset: the system default.",
            "\"default\"",
        ),
        doc(
            "echo_cancellation",
            "Remove Hark's own voice from the microphone, so it does not hear itself \
             and can be interrupted over loudspeakers. true or false.",
        ),
        doc(
            "echo_tail_ms",
            "Longest echo (speaker to room to microphone) removed, in ms; longer costs \
             CPU. 50 to 2000.",
        ),
    ];
}
