//! Whisper-style log-mel features, as Smart Turn v3 was trained on them:
//! what `transformers.WhisperFeatureExtractor(chunk_length=8)` computes with
//! `do_normalize=True` on 8 s of 16 kHz audio.
//!
//! 1. The waveform is normalised to zero mean and unit variance.
//! 2. Power spectrogram: reflect-padded by 200 samples each side, periodic
//!    Hann window of 400, hop 160, real FFT, |X|²: 801 frames of 201 bins.
//! 3. Slaney mel filter bank (80 bands, 0–8 kHz, area-normalised), floor
//!    1e-10, log10; the last frame is dropped (800 frames).
//! 4. Clamped to 8 below the maximum, then `(x + 4) / 4`.
//!
//! Computed in f64 like the reference, returned as f32.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// 16 kHz.
pub const SAMPLE_RATE: usize = 16_000;
/// 8 s: the window Smart Turn looks at.
pub const WINDOW_SAMPLES: usize = 8 * SAMPLE_RATE;
pub const N_MELS: usize = 80;
/// Frames of the window (10 ms each).
pub const N_FRAMES: usize = WINDOW_SAMPLES / HOP;

const N_FFT: usize = 400;
const HOP: usize = 160;
const BINS: usize = N_FFT / 2 + 1;
const MEL_FLOOR: f64 = 1e-10;
const VARIANCE_EPS: f64 = 1e-7;

/// The last 8 s of `audio`, zero-padded at the start when shorter.
pub fn last_window(audio: &[f32]) -> Vec<f32> {
    let mut window = vec![0.0f32; WINDOW_SAMPLES];
    let take = audio.len().min(WINDOW_SAMPLES);
    window[WINDOW_SAMPLES - take..].copy_from_slice(&audio[audio.len() - take..]);
    window
}

/// Computes the features; holds the FFT plan, window and filter bank.
pub struct LogMel {
    fft: Arc<dyn RealToComplex<f64>>,
    hann: Vec<f64>,
    /// `N_MELS` rows of `BINS` weights.
    filters: Vec<f64>,
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMel {
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        // Periodic Hann: the first N of a symmetric window of N + 1.
        let hann = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (std::f64::consts::TAU * n as f64 / N_FFT as f64).cos())
            .collect();
        Self {
            fft,
            hann,
            filters: slaney_filters(),
        }
    }

    /// Features of `window` (exactly [`WINDOW_SAMPLES`] samples), `N_MELS`
    /// rows of `N_FRAMES` values, row-major.
    pub fn compute(&self, window: &[f32]) -> Vec<f32> {
        assert_eq!(window.len(), WINDOW_SAMPLES, "one 8 s window");
        // 1. Zero mean, unit variance.
        let n = window.len() as f64;
        let mean = window.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = window
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        let scale = 1.0 / (var + VARIANCE_EPS).sqrt();
        // Rounded through f32 as the reference normalises in float32.
        let x: Vec<f64> = window
            .iter()
            .map(|&v| f64::from(((f64::from(v) - mean) * scale) as f32))
            .collect();

        // 2. Reflect padding (numpy's "reflect": the edge sample is not
        // repeated).
        let pad = N_FFT / 2;
        let mut padded = Vec::with_capacity(x.len() + 2 * pad);
        padded.extend((1..=pad).rev().map(|k| x[k]));
        padded.extend_from_slice(&x);
        padded.extend((1..=pad).map(|k| x[x.len() - 1 - k]));
        let frames = (padded.len() - N_FFT) / HOP + 1;

        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f64; BINS];
        let mut mel = vec![0.0f64; N_MELS * frames];
        for f in 0..frames {
            let start = f * HOP;
            for (k, slot) in input.iter_mut().enumerate() {
                *slot = padded[start + k] * self.hann[k];
            }
            self.fft
                .process(&mut input, &mut spectrum)
                .expect("buffers sized by the plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            // 3. Mel bands.
            for m in 0..N_MELS {
                let weights = &self.filters[m * BINS..(m + 1) * BINS];
                let energy: f64 = weights.iter().zip(&power).map(|(w, p)| w * p).sum();
                mel[m * frames + f] = energy.max(MEL_FLOOR).log10();
            }
        }
        // The last frame goes; 4. clamp and scale.
        let kept = frames - 1;
        let max = (0..N_MELS)
            .flat_map(|m| mel[m * frames..m * frames + kept].iter().copied())
            .fold(f64::NEG_INFINITY, f64::max);
        let mut out = Vec::with_capacity(N_MELS * kept);
        for m in 0..N_MELS {
            for &v in &mel[m * frames..m * frames + kept] {
                out.push(((v.max(max - 8.0) + 4.0) / 4.0) as f32);
            }
        }
        out
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= 1000.0 {
        15.0 + (hz / 1000.0).ln() * 27.0 / 6.4f64.ln()
    } else {
        3.0 * hz / 200.0
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= 15.0 {
        1000.0 * (6.4f64.ln() / 27.0 * (mel - 15.0)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// The Slaney-normalised triangular bank, `N_MELS` rows of `BINS`.
fn slaney_filters() -> Vec<f64> {
    let nyquist = (SAMPLE_RATE / 2) as f64;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let edges: Vec<f64> = (0..N_MELS + 2)
        .map(|k| mel_to_hz(lo + (hi - lo) * k as f64 / (N_MELS + 1) as f64))
        .collect();
    let bin_hz = |b: usize| nyquist * b as f64 / (BINS - 1) as f64;
    let mut filters = vec![0.0; N_MELS * BINS];
    for m in 0..N_MELS {
        let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
        let area = 2.0 / (right - left);
        for b in 0..BINS {
            let hz = bin_hz(b);
            let rising = (hz - left) / (centre - left);
            let falling = (right - hz) / (right - centre);
            filters[m * BINS + b] = rising.min(falling).max(0.0) * area;
        }
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference signal: two tones, one fading in, and LCG noise, 100 000
    /// samples (shorter than the window, so it is padded at the start).
    fn signal() -> Vec<f32> {
        let n = 100_000usize;
        let mut state: u64 = 12345;
        (0..n)
            .map(|k| {
                let t = k as f64 / 16_000.0;
                let tone = 0.5 * (std::f64::consts::TAU * 440.0 * t).sin()
                    + 0.3 * (std::f64::consts::TAU * 1234.5 * t).sin() * (k as f64 / n as f64);
                state = (state * 1_103_515_245 + 12_345) % (1 << 31);
                let noise = state as f64 / (1u64 << 31) as f64 - 0.5;
                (tone + 0.1 * noise) as f32
            })
            .collect()
    }

    /// Reference values computed once from the same signal with the Python
    /// feature extractor (pipecat's vendored `WhisperFeatureExtractor`
    /// arithmetic, numpy 2.4): rows are mel bands, columns frames.
    const ROWS: [usize; 7] = [0, 5, 10, 20, 40, 60, 79];
    const COLS: [usize; 9] = [0, 100, 200, 300, 400, 500, 600, 700, 799];
    const VALUES: [[f32; 9]; 7] = [
        [
            -0.319079, -0.319079, 0.40846, 0.689569, 0.625038, 0.387671, 0.777562, 0.515782,
            0.593379,
        ],
        [
            -0.319079, -0.319079, 0.614945, 0.66742, 0.620916, 0.677293, 0.521737, 0.544197,
            0.76036,
        ],
        [
            -0.319079, -0.319079, 1.586767, 1.588426, 1.586633, 1.58474, 1.588412, 1.586892,
            1.590055,
        ],
        [
            -0.319079, -0.319079, 0.733545, 0.43523, 0.573253, 0.50578, 0.541141, 0.542754,
            0.752413,
        ],
        [
            -0.319079, -0.319079, 0.585894, 0.588254, 0.593971, 0.602386, 0.563714, 0.501032,
            0.626759,
        ],
        [
            -0.319079, -0.319079, 0.657618, 0.643105, 0.488664, 0.655588, 0.729718, 0.570456,
            0.656697,
        ],
        [
            -0.319079, -0.319079, 0.685855, 0.586341, 0.54753, 0.566508, 0.552129, 0.588799,
            0.622555,
        ],
    ];
    const MEAN: f32 = 0.449_102_1;
    const MIN: f32 = -0.319_078_92;
    const MAX: f32 = 1.680_921_1;

    #[test]
    fn features_match_the_python_feature_extractor() {
        let features = LogMel::new().compute(&last_window(&signal()));
        assert_eq!(features.len(), N_MELS * N_FRAMES);
        for (r, row) in ROWS.iter().zip(VALUES) {
            for (c, want) in COLS.iter().zip(row) {
                let got = features[r * N_FRAMES + c];
                assert!(
                    (got - want).abs() < 2e-4,
                    "mel {r} frame {c}: {got} vs {want}"
                );
            }
        }
        let mean = features.iter().sum::<f32>() / features.len() as f32;
        let min = features.iter().copied().fold(f32::INFINITY, f32::min);
        let max = features.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!((mean - MEAN).abs() < 1e-4, "mean {mean}");
        assert!(
            (min - MIN).abs() < 1e-4 && (max - MAX).abs() < 1e-4,
            "{min} {max}"
        );
    }

    #[test]
    fn the_window_is_the_last_eight_seconds_padded_at_the_start() {
        let short = vec![1.0f32; 10];
        let w = last_window(&short);
        assert_eq!(w.len(), WINDOW_SAMPLES);
        assert!(w[..WINDOW_SAMPLES - 10].iter().all(|&x| x == 0.0));
        assert!(w[WINDOW_SAMPLES - 10..].iter().all(|&x| x == 1.0));
        let long: Vec<f32> = (0..WINDOW_SAMPLES + 5).map(|k| k as f32).collect();
        assert_eq!(last_window(&long)[0], 5.0);
    }
}
