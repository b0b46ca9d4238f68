//! Audio for Hark: everything between a sound device (or a WAV file) and
//! fixed 16 kHz mono frames, plus voice activity detection on those frames.
//!
//! Downstream code sees only [`FrameSource`]: it cannot tell whether frames
//! came from a cpal device or a file.

pub mod codec;
pub mod device;
pub mod error;
pub mod frame;
pub mod resample;
pub mod ring;
pub mod stream;
pub mod vad;
pub mod wav;

pub use error::AudioError;
pub use frame::{speech_level_dbfs, Frame, FrameSource, SAMPLE_RATE};

/// A float sample from outside (a float WAV, an `f32le` stream) made safe
/// for the resampler, whose FFT turns NaN, infinities and huge values into
/// NaN everywhere (and panics): non-finite becomes silence, the rest is
/// clipped to full scale, as a sound card would.
pub(crate) fn full_scale(sample: f32) -> f32 {
    if sample.is_finite() {
        sample.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}
