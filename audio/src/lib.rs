//! Audio for Hark: everything between a sound device (or a WAV file) and
//! fixed 16 kHz mono frames, plus voice activity detection on those frames.
//!
//! Downstream code sees only [`FrameSource`]: it cannot tell whether frames
//! came from a cpal device or a file.

pub mod device;
pub mod error;
pub mod frame;
pub mod resample;
pub mod ring;
pub mod stream;
pub mod vad;
pub mod wav;

pub use error::AudioError;
pub use frame::{Frame, FrameSource, SAMPLE_RATE};
