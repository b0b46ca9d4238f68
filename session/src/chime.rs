//! The sound a timer makes before it says what it was for: two soft rising
//! tones, about half a second.

/// The chime at `rate` Hz, mono.
pub fn chime(rate: u32) -> Vec<f32> {
    let rate = rate.max(8000) as f32;
    let mut pcm = Vec::new();
    for (freq, secs) in [(880.0f32, 0.16f32), (0.0, 0.06), (1318.5, 0.28)] {
        let n = (secs * rate) as usize;
        let fade = (0.01 * rate) as usize;
        for k in 0..n {
            let envelope = (k.min(n - k) as f32 / fade as f32).min(1.0);
            let tone = (std::f32::consts::TAU * freq * k as f32 / rate).sin();
            pcm.push(0.3 * envelope * tone);
        }
    }
    pcm
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chime_is_short_soft_and_starts_and_ends_silent() {
        let pcm = super::chime(16_000);
        assert!((7_000..9_000).contains(&pcm.len()), "{}", pcm.len());
        assert!(pcm.iter().all(|s| s.abs() <= 0.3));
        assert!(pcm[0].abs() < 1e-3 && pcm[pcm.len() - 1].abs() < 0.05);
    }
}
