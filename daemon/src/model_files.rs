//! Turning a catalogue model into its file in the store, with the advice a
//! user needs when it is missing or damaged. Every command that loads a
//! model goes through [`installed`].

use std::path::PathBuf;

use anyhow::bail;
use hark_models::store::{ModelSpec, ModelStore};

/// The store's file for `spec`, checked to exist and to have the right size
/// (free, and it catches the usual damage, an interrupted copy, before a
/// loader reads garbage; the full hash is `hark models list`'s job). `what`
/// names the kind of model in messages ("Whisper model", "Piper voice").
pub fn installed(store: &ModelStore, spec: &ModelSpec, what: &str) -> anyhow::Result<PathBuf> {
    let path = store.path_of(spec);
    let Ok(meta) = std::fs::metadata(&path) else {
        let extra = if spec.default {
            String::new()
        } else {
            format!(" {}", spec.name)
        };
        bail!(
            "{what} {} is not installed (expected {}); run `hark models fetch`{extra}",
            spec.name,
            path.display()
        );
    };
    if meta.len() != spec.size {
        bail!(
            "{what} file {} is corrupt: {} bytes, expected {}; run `hark models fetch` to reinstall it",
            path.display(),
            meta.len(),
            spec.size
        );
    }
    Ok(path)
}
