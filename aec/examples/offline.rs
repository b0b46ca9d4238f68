//! Runs the echo canceller over recorded streams, for tuning:
//! `cargo run --release -p hark-aec --example offline -- MIC.f32 REF.f32 OUT.f32 [TAIL_MS] [REF_DELAY_MS]`
//! (raw little-endian f32, 16 kHz mono). Prints the echo level before and
//! after, every 250 ms.

use hark_aec::EchoCanceller;

fn read(path: &str) -> Vec<f32> {
    std::fs::read(path)
        .expect("read input")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn db(x: &[f32]) -> f32 {
    let e = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    10.0 * (e + 1e-12).log10()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mic = read(&args[1]);
    let mut reference = read(&args[2]);
    let tail_ms: usize = args.get(4).map_or(400, |s| s.parse().unwrap());
    let delay_ms: usize = args.get(5).map_or(0, |s| s.parse().unwrap());
    // Delay the reference (it must not lag the echo).
    let mut delayed = vec![0.0; delay_ms * 16];
    delayed.append(&mut reference);
    let reference = delayed;
    let mut aec = EchoCanceller::new(16000, 160, tail_ms * 16).unwrap();
    let mut out = vec![0.0f32; mic.len()];
    let n = mic.len().min(reference.len()) / 160 * 160;
    for i in (0..n).step_by(160) {
        aec.process(
            &mic[i..i + 160],
            &reference[i..i + 160],
            &mut out[i..i + 160],
        )
        .unwrap();
    }
    let bytes: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&args[3], bytes).unwrap();
    for i in (0..n).step_by(4000) {
        let j = (i + 4000).min(n);
        println!(
            "{:6.2} s  ref {:6.1}  mic {:6.1}  out {:6.1}",
            i as f32 / 16000.0,
            db(&reference[i..j]),
            db(&mic[i..j]),
            db(&out[i..j])
        );
    }
}
