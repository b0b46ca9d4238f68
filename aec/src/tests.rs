//! Simulated-room tests: the far end (Hark's voice) goes through a short FIR
//! "room" into the microphone, optionally mixed with a near-end talker.

use super::*;

const SR: usize = 16000;
const FRAME: usize = 160;
const TAIL: usize = 2048;

/// Deterministic white noise in [-1, 1) (xorshift32).
struct Noise(u32);
impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        (self.0 as f32 / u32::MAX as f32) * 2.0 - 1.0
    }
}

/// Speech-like signal: a harmonic buzz (decaying harmonics, slow vibrato) with
/// syllable-rate amplitude modulation and a little breath noise.
fn buzz(len: usize, f0: f32, syllable_hz: f32, amp: f32, seed: u32) -> Vec<f32> {
    let mut noise = Noise(seed);
    let mut phase = 0.0f64;
    (0..len)
        .map(|i| {
            let t = i as f32 / SR as f32;
            let f = f0 * (1.0 + 0.05 * (2.0 * std::f32::consts::PI * 5.0 * t).sin());
            phase += f as f64 / SR as f64;
            let mut s = 0.0f32;
            for h in 1..=12 {
                s += (2.0 * std::f64::consts::PI * h as f64 * phase).sin() as f32 / h as f32;
            }
            let env = (std::f32::consts::PI * syllable_hz * t)
                .sin()
                .abs()
                .powf(0.7);
            amp * env * (0.3 * s + 0.05 * noise.next())
        })
        .collect()
}

/// The simulated room: 40 ms delay, a few decaying reflections, gain 0.5.
fn room(x: &[f32]) -> Vec<f32> {
    let d = SR * 40 / 1000;
    let taps: [(usize, f32); 5] = [
        (d, 0.5),
        (d + 23, 0.2),
        (d + 71, -0.12),
        (d + 160, 0.06),
        (d + 410, 0.03),
    ];
    let mut y = vec![0.0f32; x.len()];
    for (lag, g) in taps {
        for i in lag..x.len() {
            y[i] += g * x[i - lag];
        }
    }
    y
}

fn run(aec: &mut EchoCanceller, mic: &[f32], far: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; mic.len()];
    for ((m, r), o) in mic
        .chunks_exact(FRAME)
        .zip(far.chunks_exact(FRAME))
        .zip(out.chunks_exact_mut(FRAME))
    {
        aec.process(m, r, o).unwrap();
    }
    out
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len().max(1) as f64
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

/// Lag (0..max) at which `out` best matches `x`, and the match quality
/// `x` energy / energy of (`out` shifted back by the lag − `x`) in dB.
fn aligned_snr(x: &[f32], out: &[f32], max: usize) -> (usize, f64) {
    let n = x.len() - max;
    let mut best = (0, f64::MIN);
    for lag in 0..max {
        let r: Vec<f32> = (0..n).map(|i| out[i + lag] - x[i]).collect();
        let snr = db(energy(&x[..n]) / energy(&r).max(1e-20));
        if snr > best.1 {
            best = (lag, snr);
        }
    }
    best
}

fn secs(s: f32) -> usize {
    (s * SR as f32) as usize
}

#[test]
fn echo_only_is_cancelled() {
    let len = secs(8.0);
    let far = buzz(len, 130.0, 3.5, 0.8, 1);
    let mic = room(&far);
    let mut aec = EchoCanceller::new(SR as u32, FRAME, TAIL).unwrap();
    let out = run(&mut aec, &mic, &far);
    let w = secs(2.0)..len;
    let erle = db(energy(&mic[w.clone()]) / energy(&out[w.clone()]).max(1e-20));
    // Also the last 2 s alone, to show the filter has settled.
    let w2 = secs(6.0)..len;
    let erle_late = db(energy(&mic[w2.clone()]) / energy(&out[w2]).max(1e-20));
    println!("echo-only ERLE after 2 s: {erle:.1} dB (6-8 s: {erle_late:.1} dB)");
    assert!(erle >= 15.0, "ERLE {erle:.1} dB < 15 dB");
}

#[test]
fn double_talk_keeps_near_end() {
    let len = secs(9.0);
    let far = buzz(len, 130.0, 3.5, 0.8, 1);
    let mut near = buzz(len, 215.0, 2.7, 0.5, 7);
    for v in &mut near[..secs(3.0)] {
        *v = 0.0;
    }
    let echo = room(&far);
    let mic: Vec<f32> = echo.iter().zip(&near).map(|(e, n)| e + n).collect();
    let mut aec = EchoCanceller::new(SR as u32, FRAME, TAIL).unwrap();
    let out = run(&mut aec, &mic, &far);

    let w = secs(3.0)..len;
    let near_e = energy(&near[w.clone()]);
    let out_e = energy(&out[w.clone()]);
    let echo_e = energy(&echo[w.clone()]);
    let diff = db(out_e / near_e);
    // Residual = output minus the near-end signal: how much of what came out
    // is not the user (echo left over plus distortion of the user's voice).
    let resid: Vec<f32> = out[w.clone()]
        .iter()
        .zip(&near[w.clone()])
        .map(|(o, n)| o - n)
        .collect();
    let snr = db(near_e / energy(&resid).max(1e-20));
    let (lag, asnr) = aligned_snr(&near[w.clone()], &out[w.clone()], 400);
    let pre_erle =
        db(energy(&echo[secs(2.0)..secs(3.0)]) / energy(&out[secs(2.0)..secs(3.0)]).max(1e-20));
    println!(
        "double talk (3-9 s): output {diff:+.1} dB vs near-end; near-end/(out-near) {snr:.1} dB unaligned, {asnr:.1} dB at lag {lag}; \
         echo/near in mic {:.1} dB; ERLE 2-3 s before double talk {pre_erle:.1} dB",
        db(echo_e / near_e)
    );
    assert!(diff.abs() <= 6.0, "near-end energy changed by {diff:.1} dB");
    // The first half second of the interruption must come through too.
    let w = secs(3.0)..secs(3.5);
    let early = db(energy(&out[w.clone()]) / energy(&near[w]));
    println!("double talk onset (3.0-3.5 s): output {early:+.1} dB vs near-end");
    assert!(
        early.abs() <= 6.0,
        "near-end onset changed by {early:.1} dB"
    );
}

#[test]
fn silent_reference_passes_mic_through() {
    let len = secs(5.0);
    let near = buzz(len, 215.0, 2.7, 0.5, 7);
    let far = vec![0.0f32; len];
    let mut aec = EchoCanceller::new(SR as u32, FRAME, TAIL).unwrap();
    let out = run(&mut aec, &near, &far);
    let w = secs(0.5)..len;
    let diff = db(energy(&out[w.clone()]) / energy(&near[w.clone()]));
    let resid: Vec<f32> = out[w.clone()]
        .iter()
        .zip(&near[w.clone()])
        .map(|(o, n)| o - n)
        .collect();
    let snr = db(energy(&near[w.clone()]) / energy(&resid).max(1e-20));
    let (lag, asnr) = aligned_snr(&near[w.clone()], &out[w], 400);
    println!("silent reference: output {diff:+.2} dB vs mic; mic/(out-mic) {snr:.1} dB unaligned, {asnr:.1} dB at lag {lag}");
    assert!(diff.abs() <= 2.0, "output differs from mic by {diff:.2} dB");
}

#[test]
fn reset_then_reconverges() {
    let len = secs(6.0);
    let far = buzz(len, 130.0, 3.5, 0.8, 3);
    let mic = room(&far);
    let mut aec = EchoCanceller::new(SR as u32, FRAME, TAIL).unwrap();
    let _ = run(&mut aec, &mic, &far);
    aec.reset();
    let out = run(&mut aec, &mic, &far);
    let w = secs(2.0)..len;
    let erle = db(energy(&mic[w.clone()]) / energy(&out[w]).max(1e-20));
    println!("after reset, ERLE after 2 s: {erle:.1} dB");
    assert!(erle >= 15.0);
}

#[test]
fn bad_parameters_are_errors() {
    assert_eq!(
        EchoCanceller::new(16000, 0, 2048).unwrap_err(),
        AecError::BadFrameSize(0)
    );
    assert!(matches!(
        EchoCanceller::new(16000, MAX_FRAME_SIZE + 1, MAX_FILTER_LENGTH),
        Err(AecError::BadFrameSize(_))
    ));
    assert!(matches!(
        EchoCanceller::new(16000, 160, 100),
        Err(AecError::BadFilterLength { .. })
    ));
    assert!(matches!(
        EchoCanceller::new(16000, 160, MAX_FILTER_LENGTH + 1),
        Err(AecError::BadFilterLength { .. })
    ));
    assert!(matches!(
        EchoCanceller::new(0, 160, 2048),
        Err(AecError::BadSampleRate(0))
    ));
    assert!(matches!(
        EchoCanceller::new(u32::MAX, 160, 2048),
        Err(AecError::BadSampleRate(_))
    ));
}

#[test]
fn mismatched_lengths_are_errors() {
    let mut aec = EchoCanceller::new(16000, 160, 2048).unwrap();
    let a = vec![0.0f32; 160];
    let short = vec![0.0f32; 159];
    let long = vec![0.0f32; 320];
    let mut out = vec![0.0f32; 160];
    let mut out_short = vec![0.0f32; 10];
    let e = aec.process(&short, &a, &mut out).unwrap_err();
    assert_eq!(
        e,
        AecError::LengthMismatch {
            what: "mic",
            expected: 160,
            got: 159
        }
    );
    assert!(!e.to_string().is_empty());
    assert!(matches!(
        aec.process(&a, &long, &mut out),
        Err(AecError::LengthMismatch {
            what: "playback_ref",
            ..
        })
    ));
    assert!(matches!(
        aec.process(&a, &a, &mut out_short),
        Err(AecError::LengthMismatch { what: "out", .. })
    ));
    assert!(matches!(
        aec.process(&[], &[], &mut []),
        Err(AecError::LengthMismatch { .. })
    ));
    // Still usable afterwards; out-of-range and NaN input is clamped, not a panic.
    let wild = [f32::NAN, 5.0, -5.0, f32::INFINITY].repeat(40);
    aec.process(&wild, &a, &mut out).unwrap();
    assert!(out.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
}

#[test]
fn is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<EchoCanceller>();
    let aec = EchoCanceller::new(16000, 160, 2048).unwrap();
    std::thread::spawn(move || drop(aec)).join().unwrap();
}
