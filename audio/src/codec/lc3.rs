//! LC3 frames (Bluetooth LE Audio's codec) through the system liblc3
//! (Debian's liblc3-dev), by a few hand-written declarations of its C API:
//! the decoder lives in memory we allocate, set up once per stream.
//!
//! A frame liblc3 cannot decode is concealed by liblc3 itself (it returns
//! 1 for "PLC operated"); a missing one by asking it to decode nothing,
//! which is its packet-loss concealment.

use std::ffi::{c_int, c_uint, c_void};

use super::{CodecError, PacketCodec};

/// Rates LC3 runs at, in Hz.
pub const LC3_RATES: [u32; 5] = [8_000, 16_000, 24_000, 32_000, 48_000];
/// Frame durations LC3 has, in microseconds.
pub const LC3_FRAME_US: [u32; 2] = [7_500, 10_000];
/// LC3's smallest and largest frames, in bytes (`LC3_MIN_FRAME_BYTES`,
/// `LC3_MAX_FRAME_BYTES`).
pub const LC3_FRAME_BYTES: std::ops::RangeInclusive<usize> = 20..=400;

/// `LC3_PCM_FORMAT_FLOAT` of `enum lc3_pcm_format`: samples in [-1, 1].
const PCM_FORMAT_FLOAT: c_int = 3;

#[link(name = "lc3")]
extern "C" {
    fn lc3_frame_samples(dt_us: c_int, sr_hz: c_int) -> c_int;
    fn lc3_decoder_size(dt_us: c_int, sr_hz: c_int) -> c_uint;
    fn lc3_setup_decoder(
        dt_us: c_int,
        sr_hz: c_int,
        sr_pcm_hz: c_int,
        mem: *mut c_void,
    ) -> *mut c_void;
    fn lc3_decode(
        decoder: *mut c_void,
        input: *const c_void,
        nbytes: c_int,
        fmt: c_int,
        pcm: *mut c_void,
        stride: c_int,
    ) -> c_int;
    fn lc3_encoder_size(dt_us: c_int, sr_hz: c_int) -> c_uint;
    fn lc3_setup_encoder(
        dt_us: c_int,
        sr_hz: c_int,
        sr_pcm_hz: c_int,
        mem: *mut c_void,
    ) -> *mut c_void;
    fn lc3_encode(
        encoder: *mut c_void,
        fmt: c_int,
        pcm: *const c_void,
        stride: c_int,
        nbytes: c_int,
        out: *mut c_void,
    ) -> c_int;
}

/// Memory for an encoder or decoder of `size` bytes, aligned as liblc3
/// asks (to a pointer); the handle points into it.
fn context_memory(size: c_uint) -> Vec<usize> {
    vec![0; (size as usize).div_ceil(std::mem::size_of::<usize>())]
}

/// Samples in one frame, or the setup error.
fn frame_samples(rate: u32, frame_us: u32) -> Result<usize, CodecError> {
    let setup = CodecError::Lc3Setup { rate, frame_us };
    if !LC3_RATES.contains(&rate) || !LC3_FRAME_US.contains(&frame_us) {
        return Err(setup);
    }
    // SAFETY: a pure function of its arguments.
    let n = unsafe { lc3_frame_samples(frame_us as c_int, rate as c_int) };
    usize::try_from(n).ok().filter(|&n| n > 0).ok_or(setup)
}

/// A mono LC3 decoder; see the module documentation.
pub struct Lc3Codec {
    /// Owns the decoder's state; `handle` points into it, and a `Vec`'s
    /// buffer does not move when the struct does.
    _memory: Vec<usize>,
    handle: *mut c_void,
    rate: u32,
    frame: Vec<f32>,
}

// SAFETY: the decoder is plain memory owned by this value, with no
// thread-local state in liblc3; it is used from one thread at a time.
unsafe impl Send for Lc3Codec {}

impl Lc3Codec {
    pub fn new(rate: u32, frame_us: u32) -> Result<Self, CodecError> {
        let samples = frame_samples(rate, frame_us)?;
        let (dt, sr) = (frame_us as c_int, rate as c_int);
        // SAFETY: sizes from liblc3 for parameters it accepts; the memory
        // outlives the handle (both owned by the value built here).
        let mut memory = context_memory(unsafe { lc3_decoder_size(dt, sr) });
        let handle = unsafe { lc3_setup_decoder(dt, sr, 0, memory.as_mut_ptr().cast()) };
        if memory.is_empty() || handle.is_null() {
            return Err(CodecError::Lc3Setup { rate, frame_us });
        }
        Ok(Self {
            _memory: memory,
            handle,
            rate,
            frame: vec![0.0; samples],
        })
    }

    /// Decodes `packet` (`None`: conceal a missing one) into `self.frame`;
    /// liblc3's answer.
    fn run(&mut self, packet: Option<&[u8]>) -> c_int {
        let (input, len) = match packet {
            Some(p) => (p.as_ptr().cast(), p.len() as c_int),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: the handle is a set-up decoder; `frame` holds one frame
        // of samples at stride 1; the input is `len` readable bytes or
        // null (concealment). liblc3 checks the length itself.
        unsafe {
            lc3_decode(
                self.handle,
                input,
                len,
                PCM_FORMAT_FLOAT,
                self.frame.as_mut_ptr().cast(),
                1,
            )
        }
    }

    fn emit(&self, samples: &mut Vec<f32>) {
        samples.extend(self.frame.iter().map(|&s| crate::full_scale(s)));
    }
}

impl PacketCodec for Lc3Codec {
    const NAME: &'static str = "LC3";
    const MAX_PACKET: usize = *LC3_FRAME_BYTES.end();

    fn rate(&self) -> u32 {
        self.rate
    }

    fn decode(&mut self, packet: &[u8], samples: &mut Vec<f32>) -> Result<(), CodecError> {
        let len = packet.len();
        if !LC3_FRAME_BYTES.contains(&len) {
            // liblc3 would refuse it without concealing anything.
            self.lose(samples);
            return Err(CodecError::Lc3Refused { len });
        }
        match self.run(Some(packet)) {
            0 => {
                self.emit(samples);
                Ok(())
            }
            // Corrupt: liblc3 has concealed it in its place.
            1 => {
                self.emit(samples);
                Err(CodecError::Lc3Corrupt { len })
            }
            _ => {
                self.lose(samples);
                Err(CodecError::Lc3Refused { len })
            }
        }
    }

    fn lose(&mut self, samples: &mut Vec<f32>) {
        if self.run(None) < 0 {
            self.frame.fill(0.0);
        }
        self.emit(samples);
    }
}

/// An LC3 encoder, for tests and tools: what a companion app's Bluetooth
/// stack produces.
pub struct Lc3Encoder {
    _memory: Vec<usize>,
    handle: *mut c_void,
    samples: usize,
    frame_bytes: usize,
}

impl Lc3Encoder {
    /// Mono at `rate` Hz, `frame_us` frames of `frame_bytes` bytes each
    /// (20 to 400; 40 bytes of 10 ms is 32 kbit/s).
    pub fn new(rate: u32, frame_us: u32, frame_bytes: usize) -> Result<Self, CodecError> {
        let samples = frame_samples(rate, frame_us)?;
        let setup = CodecError::Lc3Setup { rate, frame_us };
        if !LC3_FRAME_BYTES.contains(&frame_bytes) {
            return Err(setup);
        }
        let (dt, sr) = (frame_us as c_int, rate as c_int);
        // SAFETY: as for the decoder.
        let mut memory = context_memory(unsafe { lc3_encoder_size(dt, sr) });
        let handle = unsafe { lc3_setup_encoder(dt, sr, 0, memory.as_mut_ptr().cast()) };
        if memory.is_empty() || handle.is_null() {
            return Err(setup);
        }
        Ok(Self {
            _memory: memory,
            handle,
            samples,
            frame_bytes,
        })
    }

    /// Samples in [-1, 1] as frames, the last one padded with silence.
    pub fn encode(&mut self, samples: &[f32]) -> Vec<Vec<u8>> {
        samples
            .chunks(self.samples)
            .map(|chunk| {
                let mut pcm = chunk.to_vec();
                pcm.resize(self.samples, 0.0);
                let mut frame = vec![0u8; self.frame_bytes];
                // SAFETY: a set-up encoder, one frame of samples at stride
                // 1, an output buffer of exactly `frame_bytes` (20..=400).
                let ok = unsafe {
                    lc3_encode(
                        self.handle,
                        PCM_FORMAT_FLOAT,
                        pcm.as_ptr().cast(),
                        1,
                        self.frame_bytes as c_int,
                        frame.as_mut_ptr().cast(),
                    )
                };
                debug_assert_eq!(ok, 0, "parameters checked in new");
                frame
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::framing::length_prefixed;
    use super::super::{PacketDecoder, StreamDecoder};
    use super::*;

    fn tone(rate: u32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| 0.4 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin())
            .collect()
    }

    fn energy(samples: &[f32]) -> f32 {
        samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32
    }

    fn decode_all(rate: u32, frame_us: u32, bytes: &[u8], chunk: usize) -> (Vec<f32>, u64, u64) {
        let mut decoder = PacketDecoder::new(Lc3Codec::new(rate, frame_us).unwrap());
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            decoder.decode(piece, &mut out);
        }
        assert_eq!(decoder.output_rate(), rate);
        (out, decoder.losses().decoded, decoder.losses().concealed)
    }

    #[test]
    fn frames_round_trip_at_every_rate_and_duration_however_split() {
        for rate in LC3_RATES {
            for frame_us in LC3_FRAME_US {
                let audio = tone(rate, 0.3);
                let frames = Lc3Encoder::new(rate, frame_us, 60).unwrap().encode(&audio);
                let bytes = length_prefixed(&frames);
                for chunk in [1, 2, 61, 4096] {
                    let (out, decoded, concealed) = decode_all(rate, frame_us, &bytes, chunk);
                    assert_eq!(out.len(), frames.len() * audio.len().div_ceil(frames.len()));
                    assert_eq!((decoded, concealed), (frames.len() as u64, 0));
                    // The tone is there (after the codec's delay).
                    let e = energy(&out[out.len() / 2..]);
                    assert!(
                        (0.05..0.12).contains(&e),
                        "{rate} Hz {frame_us} µs: energy {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn missing_short_absurd_and_garbage_frames_are_concealed_in_time() {
        let audio = tone(16_000, 0.5);
        let mut frames = Lc3Encoder::new(16_000, 10_000, 40).unwrap().encode(&audio);
        assert_eq!(frames.len(), 50);
        frames[5].clear(); // missing
        frames[15].truncate(3); // shorter than any LC3 frame
        frames[25].iter_mut().for_each(|b| *b = !*b); // garbled
        let mut bytes = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            if i == 35 {
                bytes.extend(401u16.to_le_bytes());
                bytes.extend(vec![0u8; 401]);
                continue;
            }
            bytes.extend(length_prefixed([frame]));
        }
        let (out, decoded, concealed) = decode_all(16_000, 10_000, &bytes, 5);
        assert_eq!(out.len(), 50 * 160, "every frame's 10 ms is there");
        assert!(
            decoded + concealed == 50 && concealed >= 3,
            "{decoded} {concealed}"
        );
        assert!(energy(&out[4000..]) > 0.03, "the tone goes on");
        assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
    }

    #[test]
    fn only_lc3s_rates_and_durations_are_set_up() {
        assert!(Lc3Codec::new(44_100, 10_000).is_err());
        assert!(Lc3Codec::new(16_000, 5_000).is_err());
        assert!(Lc3Encoder::new(16_000, 10_000, 19).is_err());
        assert!(Lc3Codec::new(48_000, 7_500).is_ok());
    }
}
