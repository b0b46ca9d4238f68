//! ONNX Runtime for Hark's models (the Piper voice, Smart Turn): loaded at
//! run time from a `libonnxruntime.so` Hark is given the path of, exactly
//! once per process (`ort` keeps the library in a global, so the first
//! path wins).
//!
//! Before the path goes to `ort` it is checked and `dlopen`ed here, because
//! `ort` 2.0.0-rc.12 can hang forever instead of failing when the library
//! is missing or unloadable.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use ort;

/// Why ONNX Runtime could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("ONNX Runtime library not found: {}", path.display())]
    Missing { path: PathBuf },
    #[error("cannot load ONNX Runtime library {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
}

// glibc ≥ 2.34 exports these from libc itself, which std already links.
extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
}
const RTLD_NOW: c_int = 2;

/// `OrtApiBase` from onnxruntime_c_api.h: the only struct layout we rely on.
#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(version: u32) -> *const c_void,
    get_version_string: unsafe extern "C" fn() -> *const c_char,
}

/// Path ONNX Runtime was loaded from, once it has been.
static ORT_LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

fn last_dlerror() -> String {
    // SAFETY: dlerror returns NULL or a thread-local NUL-terminated string.
    let err = unsafe { dlerror() };
    if err.is_null() {
        "unknown dlopen error".into()
    } else {
        unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Checks that `lib` is a loadable ONNX Runtime new enough for `ort`, and
/// returns its version string. Never calls into `ort`.
fn probe_ort_library(lib: &Path) -> Result<String, OnnxError> {
    let load_err = |message: String| OnnxError::Load {
        path: lib.to_path_buf(),
        message,
    };
    if !lib.is_file() {
        return Err(OnnxError::Missing {
            path: lib.to_path_buf(),
        });
    }
    let c_path = CString::new(lib.as_os_str().as_bytes())
        .map_err(|_| load_err("path contains a NUL byte".into()))?;
    // SAFETY: plain dlopen of a shared object. The handle is deliberately
    // never closed: `ort` dlopens the same file next, and unloading ONNX
    // Runtime while it is in use would be fatal.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        return Err(load_err(last_dlerror()));
    }
    let symbol = unsafe { dlsym(handle, c"OrtGetApiBase".as_ptr()) };
    if symbol.is_null() {
        return Err(load_err(format!(
            "no OrtGetApiBase symbol, not an ONNX Runtime library ({})",
            last_dlerror()
        )));
    }
    // SAFETY: OrtGetApiBase has this signature in every ONNX Runtime release
    // and returns a pointer to a static struct.
    let version = unsafe {
        let get_base: unsafe extern "C" fn() -> *const OrtApiBase = std::mem::transmute(symbol);
        let base = get_base();
        if base.is_null() {
            return Err(load_err("OrtGetApiBase returned NULL".into()));
        }
        CStr::from_ptr(((*base).get_version_string)())
            .to_string_lossy()
            .into_owned()
    };
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if !version.starts_with("1.") || minor < ort::MINOR_VERSION {
        return Err(load_err(format!(
            "ONNX Runtime {version} is too old; ort needs >= 1.{}",
            ort::MINOR_VERSION
        )));
    }
    Ok(version)
}

/// Loads ONNX Runtime from `lib` into `ort` once per process.
pub fn ensure_runtime(lib: &Path) -> Result<(), OnnxError> {
    // Always validate the requested path, even if a runtime is already
    // loaded, so a wrong configuration is reported rather than masked.
    let version = probe_ort_library(lib)?;
    let mut loaded = ORT_LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(previous) = loaded.as_ref() {
        if previous != lib {
            tracing::warn!(
                requested = %lib.display(),
                loaded = %previous.display(),
                "ONNX Runtime is already loaded in this process; keeping the first one"
            );
        }
        return Ok(());
    }
    let builder = ort::init_from(lib).map_err(|e| OnnxError::Load {
        path: lib.to_path_buf(),
        message: e.to_string(),
    })?;
    // Returns false if someone else already committed an environment, which
    // is fine: theirs is used.
    let _ = builder.with_name("hark").commit();
    tracing::info!(path = %lib.display(), %version, "loaded ONNX Runtime");
    *loaded = Some(lib.to_path_buf());
    Ok(())
}

/// A session for the small models the ears run (Smart Turn, the wake
/// word) from `model`, on one thread that does not spin: Whisper and the
/// language model have the other core. Call [`ensure_runtime`] first.
pub fn single_thread_session(model: &Path) -> Result<ort::session::Session, ort::Error> {
    ort::session::Session::builder()?
        .with_intra_threads(1)?
        .with_inter_threads(1)?
        .with_intra_op_spinning(false)?
        .commit_from_file(model)
}
