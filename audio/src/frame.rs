//! The one shape audio takes downstream of capture: fixed-length frames of
//! 16 kHz mono `f32` samples in [-1, 1], stamped with their position.

use crate::AudioError;

/// Every frame handed downstream is at this rate, mono.
pub const SAMPLE_RATE: u32 = 16_000;

/// A fixed-length run of 16 kHz mono samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Index (at [`SAMPLE_RATE`]) of `samples[0]` since the source started;
    /// this is what makes VAD timestamps sample-accurate.
    pub start_sample: u64,
    pub samples: Vec<f32>,
}

impl Frame {
    /// Index one past the last sample of this frame.
    pub fn end_sample(&self) -> u64 {
        self.start_sample + self.samples.len() as u64
    }
}

/// Anything that yields 16 kHz mono frames: a capture device, a WAV file,
/// a test script. Implementations block in `next_frame` until a frame is
/// ready (a paced file sleeps, a device waits for its DSP thread).
pub trait FrameSource: Send {
    /// The next frame, or `Ok(None)` once the source has ended for good.
    /// A final partial frame is zero-padded to full length.
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError>;

    /// Samples per frame (constant for the life of the source).
    fn frame_len(&self) -> usize;

    /// Human-readable origin, for logs ("device 'default'", "file a.wav").
    fn describe(&self) -> String;

    /// Whether this audio can carry the echo of Hark's own speaker on this
    /// machine's clock, so echo cancellation applies. A remote microphone
    /// (a companion app's stream) cannot be aligned with the local speaker.
    fn hears_local_playback(&self) -> bool {
        true
    }
}
