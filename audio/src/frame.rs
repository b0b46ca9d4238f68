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

/// How loud speech in `samples` (16 kHz) was, in dBFS: the 90th
/// percentile of its 10 ms blocks' power, so the silence around an
/// utterance and a single click count for little. `None` for silence.
pub fn speech_level_dbfs(samples: &[f32]) -> Option<f32> {
    const BLOCK: usize = SAMPLE_RATE as usize / 100;
    let mut powers: Vec<f32> = samples
        .chunks_exact(BLOCK)
        .map(|b| b.iter().map(|s| s * s).sum::<f32>() / BLOCK as f32)
        .collect();
    powers.sort_by(f32::total_cmp);
    let loud = *powers.get(powers.len() * 9 / 10)?;
    // Quieter than -70 dBFS is no speech at all.
    (loud > 1e-7).then(|| 10.0 * loud.log10())
}

#[cfg(test)]
mod level_tests {
    use super::*;

    #[test]
    fn speech_level_ignores_surrounding_silence_and_follows_gain() {
        let tone =
            |amp: f32| -> Vec<f32> { (0..16_000).map(|i| amp * (i as f32 * 0.1).sin()).collect() };
        let mut padded = vec![0.0; 16_000];
        padded.extend(tone(0.5));
        padded.extend(vec![0.0; 8_000]);
        let level = speech_level_dbfs(&padded).unwrap();
        // A sine of amplitude 0.5 has power 0.125: -9 dBFS.
        assert!((level + 9.03).abs() < 0.2, "{level}");
        let quieter = speech_level_dbfs(&tone(0.05)).unwrap();
        assert!((level - quieter - 20.0).abs() < 0.2);
        assert_eq!(speech_level_dbfs(&vec![0.0; 16_000]), None);
        assert_eq!(speech_level_dbfs(&[0.1; 100]), None);
    }
}
