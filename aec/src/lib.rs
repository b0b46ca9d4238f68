//! Acoustic echo cancellation with speexdsp: removes Hark's own voice (the
//! playback signal, given as reference) from the microphone signal so Hark
//! does not interrupt itself, while the user's voice passes through.
//!
//! The heavy lifting is done by the system `libspeexdsp` (Debian package
//! `libspeexdsp-dev`): its MDF adaptive filter models the loudspeaker → room →
//! microphone path and subtracts the predicted echo, and its preprocessor,
//! bound to the echo state, suppresses the residual echo the linear filter
//! leaves behind. Noise suppression, AGC and dereverberation in the
//! preprocessor are left off so that the user's speech is not altered beyond
//! what echo removal needs.
//!
//! Latency: the output lags the input by one frame (`frame_size` samples),
//! from the preprocessor's overlap-add. The echo canceller also applies a
//! gentle DC-removal high-pass (below ~50 Hz at 16 kHz) to the microphone.

use std::fmt;
use std::os::raw::{c_int, c_void};

mod ffi {
    //! Hand-written declarations for the parts of `speex/speex_echo.h` and
    //! `speex/speex_preprocess.h` used here (`spx_int16_t` is `int16_t`).
    use std::os::raw::{c_int, c_void};

    /// Opaque `SpeexEchoState`.
    #[repr(C)]
    pub struct SpeexEchoState {
        _private: [u8; 0],
    }

    /// Opaque `SpeexPreprocessState`.
    #[repr(C)]
    pub struct SpeexPreprocessState {
        _private: [u8; 0],
    }

    /// `speex_echo_ctl`: set sampling rate (`spx_int32_t *`).
    pub const SPEEX_ECHO_SET_SAMPLING_RATE: c_int = 24;
    /// `speex_preprocess_ctl`: enable/disable denoiser (`spx_int32_t *`).
    pub const SPEEX_PREPROCESS_SET_DENOISE: c_int = 0;
    /// `speex_preprocess_ctl`: enable/disable AGC (`spx_int32_t *`).
    pub const SPEEX_PREPROCESS_SET_AGC: c_int = 2;
    /// `speex_preprocess_ctl`: enable/disable dereverb (`spx_int32_t *`).
    pub const SPEEX_PREPROCESS_SET_DEREVERB: c_int = 8;
    /// `speex_preprocess_ctl`: max noise attenuation in dB, negative (`spx_int32_t *`).
    pub const SPEEX_PREPROCESS_SET_NOISE_SUPPRESS: c_int = 18;
    /// `speex_preprocess_ctl`: max residual echo attenuation in dB, negative (`spx_int32_t *`).
    pub const SPEEX_PREPROCESS_SET_ECHO_SUPPRESS: c_int = 20;
    /// `speex_preprocess_ctl`: max residual echo attenuation during near-end speech, negative (`spx_int32_t *`).
    pub const SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE: c_int = 22;
    /// `speex_preprocess_ctl`: bind an echo state (`SpeexEchoState *` passed as the pointer itself).
    pub const SPEEX_PREPROCESS_SET_ECHO_STATE: c_int = 24;

    extern "C" {
        pub fn speex_echo_state_init(
            frame_size: c_int,
            filter_length: c_int,
        ) -> *mut SpeexEchoState;
        pub fn speex_echo_state_destroy(st: *mut SpeexEchoState);
        pub fn speex_echo_cancellation(
            st: *mut SpeexEchoState,
            rec: *const i16,
            play: *const i16,
            out: *mut i16,
        );
        pub fn speex_echo_state_reset(st: *mut SpeexEchoState);
        pub fn speex_echo_ctl(st: *mut SpeexEchoState, request: c_int, ptr: *mut c_void) -> c_int;

        pub fn speex_preprocess_state_init(
            frame_size: c_int,
            sampling_rate: c_int,
        ) -> *mut SpeexPreprocessState;
        pub fn speex_preprocess_state_destroy(st: *mut SpeexPreprocessState);
        pub fn speex_preprocess_run(st: *mut SpeexPreprocessState, x: *mut i16) -> c_int;
        pub fn speex_preprocess_ctl(
            st: *mut SpeexPreprocessState,
            request: c_int,
            ptr: *mut c_void,
        ) -> c_int;
    }
}

/// Largest frame accepted (samples per call); 8192 is far beyond any sane
/// real-time frame (≈ 0.5 s at 16 kHz) and keeps sizes well inside `c_int`.
pub const MAX_FRAME_SIZE: usize = 8192;
/// Largest echo tail accepted, in samples (≈ 2 s at 16 kHz).
pub const MAX_FILTER_LENGTH: usize = 32768;

/// Errors from [`EchoCanceller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AecError {
    /// Frame size is zero or larger than [`MAX_FRAME_SIZE`].
    BadFrameSize(usize),
    /// Filter length is smaller than the frame size or larger than [`MAX_FILTER_LENGTH`].
    BadFilterLength {
        filter_length: usize,
        frame_size: usize,
    },
    /// Sample rate outside 8000..=48000 Hz.
    BadSampleRate(u32),
    /// A buffer passed to [`EchoCanceller::process`] is not `frame_size` samples long.
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// libspeexdsp failed to allocate or configure a state.
    InitFailed(&'static str),
}

impl fmt::Display for AecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AecError::BadFrameSize(n) => {
                write!(f, "bad frame size {n}: must be 1..={MAX_FRAME_SIZE} samples")
            }
            AecError::BadFilterLength { filter_length, frame_size } => write!(
                f,
                "bad filter length {filter_length}: must be between the frame size ({frame_size}) and {MAX_FILTER_LENGTH} samples"
            ),
            AecError::BadSampleRate(r) => {
                write!(f, "bad sample rate {r} Hz: must be 8000..=48000")
            }
            AecError::LengthMismatch { what, expected, got } => write!(
                f,
                "{what} has {got} samples, expected the frame size {expected}"
            ),
            AecError::InitFailed(what) => write!(f, "speexdsp initialisation failed: {what}"),
        }
    }
}

impl std::error::Error for AecError {}

/// Speex echo canceller plus residual-echo suppressor for one mono stream.
///
/// Feed it one frame at a time: the microphone frame and the playback frame
/// that was sent to the speaker at (as nearly as possible) the same moment.
/// The adaptive filter takes a second or two of playback to converge.
pub struct EchoCanceller {
    echo: *mut ffi::SpeexEchoState,
    pre: *mut ffi::SpeexPreprocessState,
    frame_size: usize,
    mic_i16: Vec<i16>,
    ref_i16: Vec<i16>,
    out_i16: Vec<i16>,
}

// SAFETY: the speex echo and preprocess states are plain heap objects
// allocated by libspeexdsp with no thread affinity, no thread-local storage
// and no global mutable state; they are owned exclusively by this value (the
// preprocess state only points at the echo state, which is owned by the same
// value) and every access goes through `&mut self` or `Drop`. Moving the owner
// to another thread therefore moves all access with it, and the library is
// only ever used from one thread at a time. `EchoCanceller` is deliberately
// not `Sync` (the raw pointers opt it out): nothing in it may be shared.
unsafe impl Send for EchoCanceller {}

fn f32_to_i16(x: f32) -> i16 {
    // NaN maps to 0 (`as` saturates, and NaN casts to 0).
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

fn i16_to_f32(x: i16) -> f32 {
    x as f32 / 32768.0
}

impl EchoCanceller {
    /// Creates a canceller.
    ///
    /// `sample_rate` in Hz (Hark uses 16000), `frame_size` samples per call
    /// (e.g. 160 = 10 ms at 16 kHz), `filter_length` the echo tail in samples
    /// (e.g. 2048-4096 = 128-256 ms at 16 kHz; it must cover the playback →
    /// microphone delay plus the room's reverberation).
    pub fn new(
        sample_rate: u32,
        frame_size: usize,
        filter_length: usize,
    ) -> Result<Self, AecError> {
        if !(8000..=48000).contains(&sample_rate) {
            return Err(AecError::BadSampleRate(sample_rate));
        }
        if frame_size == 0 || frame_size > MAX_FRAME_SIZE {
            return Err(AecError::BadFrameSize(frame_size));
        }
        if filter_length < frame_size || filter_length > MAX_FILTER_LENGTH {
            return Err(AecError::BadFilterLength {
                filter_length,
                frame_size,
            });
        }

        // SAFETY: sizes were validated above and fit in c_int.
        let echo =
            unsafe { ffi::speex_echo_state_init(frame_size as c_int, filter_length as c_int) };
        if echo.is_null() {
            return Err(AecError::InitFailed("speex_echo_state_init returned null"));
        }
        // SAFETY: same as above.
        let pre =
            unsafe { ffi::speex_preprocess_state_init(frame_size as c_int, sample_rate as c_int) };
        if pre.is_null() {
            // SAFETY: `echo` is a live state we own and have not shared.
            unsafe { ffi::speex_echo_state_destroy(echo) };
            return Err(AecError::InitFailed(
                "speex_preprocess_state_init returned null",
            ));
        }

        // From here on Drop cleans up both states on any early return.
        let aec = EchoCanceller {
            echo,
            pre,
            frame_size,
            mic_i16: vec![0; frame_size],
            ref_i16: vec![0; frame_size],
            out_i16: vec![0; frame_size],
        };
        aec.configure(sample_rate)?;
        Ok(aec)
    }

    fn configure(&self, sample_rate: u32) -> Result<(), AecError> {
        let echo_ctl = |req: c_int, val: i32| -> Result<(), AecError> {
            let mut v: i32 = val;
            // SAFETY: `self.echo` is live; the request takes a `spx_int32_t *`.
            let rc =
                unsafe { ffi::speex_echo_ctl(self.echo, req, &mut v as *mut i32 as *mut c_void) };
            if rc != 0 {
                return Err(AecError::InitFailed("speex_echo_ctl rejected a setting"));
            }
            Ok(())
        };
        let pre_ctl = |req: c_int, val: i32| -> Result<(), AecError> {
            let mut v: i32 = val;
            // SAFETY: `self.pre` is live; these requests take a `spx_int32_t *`.
            let rc = unsafe {
                ffi::speex_preprocess_ctl(self.pre, req, &mut v as *mut i32 as *mut c_void)
            };
            if rc != 0 {
                return Err(AecError::InitFailed(
                    "speex_preprocess_ctl rejected a setting",
                ));
            }
            Ok(())
        };

        echo_ctl(ffi::SPEEX_ECHO_SET_SAMPLING_RATE, sample_rate as i32)?;

        // Bind the echo state so the preprocessor suppresses residual echo.
        // SAFETY: both states are live; SET_ECHO_STATE takes the echo state
        // pointer itself. The echo state outlives the binding: it is destroyed
        // only after the preprocessor in Drop.
        let rc = unsafe {
            ffi::speex_preprocess_ctl(
                self.pre,
                ffi::SPEEX_PREPROCESS_SET_ECHO_STATE,
                self.echo as *mut c_void,
            )
        };
        if rc != 0 {
            return Err(AecError::InitFailed(
                "could not bind echo state to preprocessor",
            ));
        }

        pre_ctl(ffi::SPEEX_PREPROCESS_SET_AGC, 0)?;
        pre_ctl(ffi::SPEEX_PREPROCESS_SET_DEREVERB, 0)?;
        // The preprocessor's spectral gain stage (the "denoiser") is also
        // what applies residual echo suppression: with SET_DENOISE off it
        // passes the signal through untouched and the echo binding has no
        // effect. So keep it on, but with a 0 dB noise floor, i.e. no noise
        // suppression: stationary noise and the user's speech keep their
        // level and only residual echo is attenuated.
        pre_ctl(ffi::SPEEX_PREPROCESS_SET_DENOISE, 1)?;
        pre_ctl(ffi::SPEEX_PREPROCESS_SET_NOISE_SUPPRESS, 0)?;
        pre_ctl(ffi::SPEEX_PREPROCESS_SET_ECHO_SUPPRESS, ECHO_SUPPRESS_DB)?;
        pre_ctl(
            ffi::SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE,
            ECHO_SUPPRESS_ACTIVE_DB,
        )?;
        Ok(())
    }

    /// Samples per frame this canceller was created with.
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Cancels the echo of one frame.
    ///
    /// `mic` and `playback_ref` are `frame_size` f32 samples in [-1, 1]
    /// (values outside are clamped), time-aligned as well as the caller can
    /// (the playback as it was sent to the speaker). The cleaned frame is
    /// written into `out`, which must also be `frame_size` long; it lags the
    /// input by one frame. On a length error nothing is processed and the
    /// state is unchanged.
    pub fn process(
        &mut self,
        mic: &[f32],
        playback_ref: &[f32],
        out: &mut [f32],
    ) -> Result<(), AecError> {
        let n = self.frame_size;
        for (what, got) in [
            ("mic", mic.len()),
            ("playback_ref", playback_ref.len()),
            ("out", out.len()),
        ] {
            if got != n {
                return Err(AecError::LengthMismatch {
                    what,
                    expected: n,
                    got,
                });
            }
        }
        for (d, &s) in self.mic_i16.iter_mut().zip(mic) {
            *d = f32_to_i16(s);
        }
        for (d, &s) in self.ref_i16.iter_mut().zip(playback_ref) {
            *d = f32_to_i16(s);
        }
        // SAFETY: the states are live and owned by `self` (exclusive via
        // `&mut self`); all three buffers hold exactly `frame_size` samples,
        // which is the frame size both states were created with.
        unsafe {
            ffi::speex_echo_cancellation(
                self.echo,
                self.mic_i16.as_ptr(),
                self.ref_i16.as_ptr(),
                self.out_i16.as_mut_ptr(),
            );
            ffi::speex_preprocess_run(self.pre, self.out_i16.as_mut_ptr());
        }
        for (d, &s) in out.iter_mut().zip(&self.out_i16) {
            *d = i16_to_f32(s);
        }
        Ok(())
    }

    /// Forgets the learned echo path (e.g. after the audio devices change).
    pub fn reset(&mut self) {
        // SAFETY: the echo state is live and exclusively borrowed.
        unsafe { ffi::speex_echo_state_reset(self.echo) };
    }
}

impl Drop for EchoCanceller {
    fn drop(&mut self) {
        // SAFETY: both pointers are non-null live states owned by `self` and
        // destroyed exactly once; the preprocessor (which references the echo
        // state) goes first.
        unsafe {
            ffi::speex_preprocess_state_destroy(self.pre);
            ffi::speex_echo_state_destroy(self.echo);
        }
    }
}

impl fmt::Debug for EchoCanceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoCanceller")
            .field("frame_size", &self.frame_size)
            .finish_non_exhaustive()
    }
}

/// Residual echo attenuation (dB, negative) while only the far end talks.
const ECHO_SUPPRESS_DB: i32 = -40;
/// Residual echo attenuation (dB, negative) while the near end talks too;
/// milder so the user's voice is not chopped during double talk.
const ECHO_SUPPRESS_ACTIVE_DB: i32 = -15;

#[cfg(test)]
mod tests;
