//! Minimal FFI to the system libespeak-ng (text → IPA phonemes only).
//!
//! Only the handful of functions we need are declared by hand (matching
//! `/usr/include/espeak-ng/{speak_lib,espeak_ng}.h` of espeak-ng 1.51); the
//! library is linked dynamically by `build.rs`.
//!
//! # Thread safety
//! libespeak-ng keeps all of its state (current voice, translator, the
//! buffer `espeak_TextToPhonemes` returns) in process globals and is not
//! thread-safe. Every call goes through the [`ESPEAK`] mutex, which also
//! remembers whether initialisation succeeded and which voice is selected.
//! Nothing else in the process may call libespeak-ng directly.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

use crate::TtsError;

/// `espeak_ng_STATUS`: 0 is `ENS_OK`, anything else an errno or espeak code.
type EspeakStatus = u32;
const ENS_OK: EspeakStatus = 0;
/// `ENOUTPUT_MODE_SYNCHRONOUS` without `ENOUTPUT_MODE_SPEAK_AUDIO`: never open
/// an audio device — we only want phonemes.
const ENOUTPUT_MODE_SYNCHRONOUS: c_int = 0x0001;
const ESPEAK_CHARS_UTF8: c_int = 1;
const ESPEAK_PHONEMES_IPA: c_int = 0x02;

/// Opaque `espeak_ng_ERROR_CONTEXT` (a pointer to a private struct).
type ErrorContext = *mut c_void;

extern "C" {
    fn espeak_ng_InitializePath(path: *const c_char);
    fn espeak_ng_Initialize(context: *mut ErrorContext) -> EspeakStatus;
    fn espeak_ng_ClearErrorContext(context: *mut ErrorContext);
    fn espeak_ng_InitializeOutput(
        output_mode: c_int,
        buffer_length: c_int,
        device: *const c_char,
    ) -> EspeakStatus;
    fn espeak_ng_SetVoiceByName(name: *const c_char) -> EspeakStatus;
    fn espeak_ng_GetStatusCodeMessage(status: EspeakStatus, buffer: *mut c_char, length: usize);
    fn espeak_Info(path_data: *mut *const c_char) -> *const c_char;
    fn espeak_TextToPhonemes(
        textptr: *mut *const c_void,
        textmode: c_int,
        phonememode: c_int,
    ) -> *const c_char;
}

struct State {
    initialized: bool,
    voice: Option<String>,
}

/// Serialises all access to libespeak-ng (see the module docs).
static ESPEAK: Mutex<State> = Mutex::new(State {
    initialized: false,
    voice: None,
});

fn status_message(status: EspeakStatus) -> String {
    let mut buf = [0 as c_char; 512];
    // SAFETY: espeak writes at most `len` bytes including the terminating NUL.
    unsafe { espeak_ng_GetStatusCodeMessage(status, buf.as_mut_ptr(), buf.len()) };
    let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    format!("{msg} (status {status:#x})")
}

/// The data directory espeak resolved (after `espeak_ng_InitializePath`), so
/// errors can say where it looked.
fn data_path() -> String {
    let mut path: *const c_char = std::ptr::null();
    // SAFETY: espeak_Info only stores a pointer to its static path buffer.
    unsafe { espeak_Info(&mut path) };
    if path.is_null() {
        "unknown".into()
    } else {
        unsafe { CStr::from_ptr(path) }
            .to_string_lossy()
            .into_owned()
    }
}

impl State {
    /// Initialises espeak once. The `espeak_ng_*` API is used instead of
    /// `espeak_Initialize` because the latter either calls `exit(1)` when the
    /// data directory is missing or (with `espeakINITIALIZE_DONT_EXIT`) hides
    /// the failure; here we get a status code to turn into an error.
    fn ensure_initialized(&mut self) -> Result<(), TtsError> {
        if self.initialized {
            return Ok(());
        }
        let mut context: ErrorContext = std::ptr::null_mut();
        // SAFETY: NULL path = $ESPEAK_DATA_PATH or the compiled-in default;
        // we hold the global lock.
        let status = unsafe {
            espeak_ng_InitializePath(std::ptr::null());
            espeak_ng_Initialize(&mut context)
        };
        if !context.is_null() {
            unsafe { espeak_ng_ClearErrorContext(&mut context) };
        }
        if status != ENS_OK {
            return Err(TtsError::EspeakInit(format!(
                "{} in data directory {}",
                status_message(status),
                data_path()
            )));
        }
        let status =
            unsafe { espeak_ng_InitializeOutput(ENOUTPUT_MODE_SYNCHRONOUS, 0, std::ptr::null()) };
        if status != ENS_OK {
            return Err(TtsError::EspeakInit(status_message(status)));
        }
        self.initialized = true;
        Ok(())
    }

    fn ensure_voice(&mut self, voice: &str) -> Result<(), TtsError> {
        self.ensure_initialized()?;
        if self.voice.as_deref() == Some(voice) {
            return Ok(());
        }
        let name = CString::new(voice).map_err(|_| TtsError::EspeakVoice {
            voice: voice.to_string(),
            message: "voice name contains a NUL byte".into(),
        })?;
        // SAFETY: valid C string; lock held.
        let status = unsafe { espeak_ng_SetVoiceByName(name.as_ptr()) };
        if status != ENS_OK {
            self.voice = None;
            return Err(TtsError::EspeakVoice {
                voice: voice.to_string(),
                message: status_message(status),
            });
        }
        self.voice = Some(voice.to_string());
        Ok(())
    }
}

/// Initialises espeak-ng and selects `voice`, so that a missing data
/// directory or unknown voice is reported at voice load time rather than on
/// the first utterance.
pub(crate) fn check_voice(voice: &str) -> Result<(), TtsError> {
    let mut state = ESPEAK.lock().unwrap_or_else(|p| p.into_inner());
    state.ensure_voice(voice)
}

/// Raw espeak IPA for `text` (no punctuation; espeak drops it). espeak may
/// split the text into several clauses itself; their phonemes are joined
/// with a space. U+200D ties are left in; the caller strips them.
pub(crate) fn text_to_ipa(text: &str, voice: &str) -> Result<String, TtsError> {
    // Interior NULs would silently truncate the C string.
    let text = CString::new(text.replace('\0', " ")).expect("NULs were removed");
    let mut state = ESPEAK.lock().unwrap_or_else(|p| p.into_inner());
    state.ensure_voice(voice)?;

    let mut out = String::new();
    let mut ptr: *const c_void = text.as_ptr().cast();
    while !ptr.is_null() {
        // SAFETY: `ptr` points into `text`, which outlives the loop; espeak
        // advances it (or sets it to NULL at the end). The returned buffer is
        // espeak-owned and only valid until the next call, so it is copied
        // immediately while the lock is still held.
        let phonemes =
            unsafe { espeak_TextToPhonemes(&mut ptr, ESPEAK_CHARS_UTF8, ESPEAK_PHONEMES_IPA) };
        if phonemes.is_null() {
            break;
        }
        let chunk = unsafe { CStr::from_ptr(phonemes) }.to_string_lossy();
        let chunk = chunk.trim();
        if !chunk.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(chunk);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_world_ipa() {
        let ipa = text_to_ipa("Hello world", "en-us").unwrap();
        assert!(ipa.contains("həlˈoʊ"), "{ipa:?}");
        assert!(ipa.contains("wˈɜːld"), "{ipa:?}");
    }

    #[test]
    fn unknown_voice_is_an_error() {
        let err = text_to_ipa("hello", "xx-no-such-voice").unwrap_err();
        assert!(err.to_string().contains("xx-no-such-voice"), "{err}");
        // A failed switch must not leave us unable to use a good voice.
        assert!(text_to_ipa("hello", "en-us").unwrap().contains("həlˈoʊ"));
    }

    #[test]
    fn empty_and_nul_text() {
        assert_eq!(text_to_ipa("", "en-us").unwrap(), "");
        assert!(!text_to_ipa("a\0b", "en-us").unwrap().is_empty());
    }

    /// Set in the child process of `missing_data_is_reported`.
    const CHILD_ENV: &str = "HARK_TTS_ESPEAK_MISSING_DATA_CHILD";

    /// espeak initialises once per process, so the missing-data case runs in
    /// a child copy of this test binary pointed at an empty data directory.
    #[test]
    fn missing_data_is_reported() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return;
        }
        let empty = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "espeak::tests::missing_data_child",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .env("ESPEAK_DATA_PATH", empty.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    #[test]
    fn missing_data_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let err = check_voice("en-us").unwrap_err();
        assert!(matches!(err, TtsError::EspeakInit(_)), "{err}");
        let data = std::env::var("ESPEAK_DATA_PATH").unwrap();
        assert!(err.to_string().contains(&data), "{err}");
        println!("child error: {err}");
    }
}
