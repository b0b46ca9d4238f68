//! The mel filter bank whisper.cpp reads from the model file.
//!
//! OpenAI's Whisper ships `mel_filters.npz`, which is
//! `librosa.filters.mel(sr=16000, n_fft=400, n_mels=N)` (Slaney mel scale,
//! Slaney area normalisation) saved as float32; the Python converter copies
//! it into the ggml file. CTranslate2 models do not carry it, so it is
//! recomputed here following librosa's arithmetic step by step — including
//! its float32 rounding between the triangle and normalisation steps — so the
//! result matches the shipped table bit for bit or within an ulp.

/// Whisper's audio front end: 16 kHz audio, 400-sample (25 ms) FFT window.
pub(crate) const WHISPER_SAMPLE_RATE: u32 = 16_000;
pub(crate) const WHISPER_N_FFT: usize = 400;

/// Frequency bins of a real FFT of `n_fft` samples (201 for Whisper).
pub(crate) const fn fft_bins(n_fft: usize) -> usize {
    n_fft / 2 + 1
}

// Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
const LINEAR_HZ_PER_MEL: f64 = 200.0 / 3.0;
const LOG_REGION_START_HZ: f64 = 1000.0;
const LOG_REGION_START_MEL: f64 = LOG_REGION_START_HZ / LINEAR_HZ_PER_MEL;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= LOG_REGION_START_HZ {
        LOG_REGION_START_MEL + (hz / LOG_REGION_START_HZ).ln() / log_step()
    } else {
        hz / LINEAR_HZ_PER_MEL
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= LOG_REGION_START_MEL {
        LOG_REGION_START_HZ * (log_step() * (mel - LOG_REGION_START_MEL)).exp()
    } else {
        LINEAR_HZ_PER_MEL * mel
    }
}

/// librosa's `filters.mel(sr, n_fft, n_mels)` with its defaults (fmin 0,
/// fmax sr/2, htk=False, norm='slaney'), row-major `n_mels × (n_fft/2 + 1)`.
pub(crate) fn slaney_mel_filters(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_bins = fft_bins(n_fft);
    let sample_rate = f64::from(sample_rate);
    // np.fft.rfftfreq(n_fft, 1/sr): bin k sits at k·sr/n_fft Hz.
    let bin_spacing_hz = 1.0 / (n_fft as f64 * (1.0 / sample_rate));
    let bin_hz: Vec<f64> = (0..n_bins).map(|k| k as f64 * bin_spacing_hz).collect();

    // n_mels + 2 band edges evenly spaced in mel between 0 Hz and Nyquist
    // (np.linspace: start + i·step, last point pinned to the end).
    let n_edges = n_mels + 2;
    let min_mel = hz_to_mel(0.0);
    let max_mel = hz_to_mel(sample_rate / 2.0);
    let step = (max_mel - min_mel) / (n_edges - 1) as f64;
    let edges_hz: Vec<f64> = (0..n_edges)
        .map(|i| {
            let mel = if i == n_edges - 1 {
                max_mel
            } else {
                i as f64 * step + min_mel
            };
            mel_to_hz(mel)
        })
        .collect();

    let mut weights = vec![0f32; n_mels * n_bins];
    for band in 0..n_mels {
        let (left, centre, right) = (edges_hz[band], edges_hz[band + 1], edges_hz[band + 2]);
        let rising_width = centre - left;
        let falling_width = right - centre;
        // Slaney normalisation: each triangle has unit area in Hz.
        let area_norm = 2.0 / (right - left);
        let row = &mut weights[band * n_bins..(band + 1) * n_bins];
        for (weight, &hz) in row.iter_mut().zip(&bin_hz) {
            let rising = -(left - hz) / rising_width;
            let falling = (right - hz) / falling_width;
            // np.maximum(0, x) keeps x unless 0 > x, so the -0.0 that
            // band 0 gets at 0 Hz survives (Rust's f64::max would not
            // promise that, and the reference table has it).
            let lower = rising.min(falling);
            let triangle = if 0.0 > lower { 0.0 } else { lower };
            // librosa stores the triangle in a float32 array, then scales
            // that array in place: two roundings, reproduced here.
            let stored = triangle as f32;
            *weight = (f64::from(stored) * area_norm) as f32;
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whisper_bank(n_mels: usize) -> Vec<f32> {
        slaney_mel_filters(WHISPER_SAMPLE_RATE, WHISPER_N_FFT, n_mels)
    }

    /// Values from Whisper's `mel_filters.npz` (librosa 80-band bank),
    /// printed as the f64 that each stored f32 widens to.
    #[test]
    fn matches_known_librosa_values() {
        let bank = whisper_bank(80);
        let at = |band: usize, bin: usize| bank[band * 201 + bin];
        let known = [
            (0, 1, 0.024_862_594_902_515_41_f64),
            (1, 1, 0.001_990_821_911_022_067),
            (1, 2, 0.022_871_771_827_340_126),
            (10, 10, 0.019_908_217_713_236_81),
            (10, 11, 0.004_954_374_860_972_166),
            (40, 42, 0.005_411_104_764_789_343),
            (40, 43, 0.014_735_566_452_145_576),
            (40, 44, 0.006_518_189_795_315_266),
            (79, 186, 0.000_366_741_674_952_209),
            (79, 192, 0.003_164_711_873_978_376_4),
            (79, 199, 0.000_448_759_004_939_347_5),
        ];
        for (band, bin, expected) in known {
            let got = f64::from(at(band, bin));
            assert!(
                (got - expected).abs() <= 1e-9,
                "band {band} bin {bin}: {got} != {expected}"
            );
        }
        // Outside its triangle a band is exactly zero; at 0 Hz librosa's
        // arithmetic yields -0.0, which the reference table keeps.
        assert_eq!(at(0, 0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(at(0, 2), 0.0);
        assert_eq!(at(79, 200), 0.0);
        assert_eq!(at(40, 41), 0.0);
    }

    fn sha256_hex(bank: &[f32]) -> String {
        use sha2::{Digest, Sha256};
        let bytes: Vec<u8> = bank.iter().flat_map(|w| w.to_le_bytes()).collect();
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// SHA-256 of the little-endian f32 arrays `mel_80` and `mel_128` in
    /// OpenAI Whisper's `whisper/assets/mel_filters.npz`: the whole bank
    /// must match the table the reference ggml files carry, bit for bit.
    #[test]
    fn whole_bank_is_bit_identical_to_whispers_table() {
        assert_eq!(
            sha256_hex(&whisper_bank(80)),
            "4f2701b1d287d74a0dc9871026e9519d98cb76426615f2539b0d151a0ae4ec2e"
        );
        assert_eq!(
            sha256_hex(&whisper_bank(128)),
            "2a5f9822897750e047c85dea37cc268d3be0ecfd23c28a5f10da129d99d05afe"
        );
    }

    #[test]
    fn bands_are_triangles_with_rising_peaks() {
        let bank = whisper_bank(80);
        let mut previous_peak = 0;
        for band in 0..80 {
            let row = &bank[band * 201..(band + 1) * 201];
            assert!(row.iter().all(|&w| w >= 0.0));
            let peak = (0..201).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            assert!(
                peak >= previous_peak,
                "band {band} peaks before band {}",
                band - 1
            );
            previous_peak = peak;
            // Non-zero weights form one contiguous run around the peak.
            let nonzero: Vec<usize> = (0..201).filter(|&k| row[k] > 0.0).collect();
            assert_eq!(
                nonzero.last().unwrap() - nonzero[0] + 1,
                nonzero.len(),
                "band {band}"
            );
        }
        // The first 16 bands are in the linear region and equally wide, so
        // their weights sum to the same value (librosa: 0.02486259).
        for band in 0..5 {
            let sum: f32 = bank[band * 201..(band + 1) * 201].iter().sum();
            assert!(
                (sum - 0.024_862_59).abs() < 1e-6,
                "band {band} sums to {sum}"
            );
        }
    }

    #[test]
    fn supports_the_128_band_bank_of_large_v3() {
        let bank = whisper_bank(128);
        assert_eq!(bank.len(), 128 * 201);
        assert!(bank.iter().all(|w| w.is_finite() && *w >= 0.0));
        // The last band reaches up to (but excludes) the Nyquist bin.
        assert_eq!(bank[127 * 201 + 200], 0.0);
        assert!(bank[127 * 201 + 199] > 0.0);
    }

    #[test]
    fn mel_scale_round_trips() {
        for hz in [0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9, "{hz}");
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
    }
}
