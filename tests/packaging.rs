//! `packaging/build-deb`: the .deb holds every file it should, with sane
//! control fields. One test runs the script on a stand-in binary (a shell
//! script answering `--version`, `manpage` and `completions`), so the
//! script's layout is checked on any machine with dpkg; the other packages
//! the real `hark`.
//!
//! Needs `dpkg-deb` (Debian package `dpkg`, always installed on Debian).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every path the package must install (as `dpkg-deb -c` lists them).
const FILES: &[&str] = &[
    "./usr/bin/hark",
    "./usr/lib/systemd/user/hark.service",
    "./usr/share/dbus-1/services/dev.hark.Hark.service",
    "./usr/share/dbus-1/services/dev.hark.Speech.Provider.service",
    "./usr/share/applications/dev.hark.Hark.desktop",
    "./usr/share/icons/hicolor/scalable/apps/dev.hark.Hark.svg",
    "./usr/share/hark/systemd/network.conf",
    "./usr/share/doc/hark/config.toml.example",
    "./usr/share/doc/hark/copyright",
    "./usr/share/man/man1/hark.1.gz",
    "./usr/share/bash-completion/completions/hark",
    "./usr/share/zsh/vendor-completions/_hark",
    "./usr/share/fish/vendor_completions.d/hark.fish",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs build-deb on `binary`; returns the .deb's path.
fn build_deb(binary: &Path, out_dir: &Path) -> PathBuf {
    let out = Command::new(repo().join("packaging/build-deb"))
        .arg(binary)
        .arg(out_dir)
        .env_remove("HARK_DEB_NOSTRIP")
        .output()
        .expect("run packaging/build-deb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "build-deb failed:\n{stdout}\n{stderr}"
    );
    let deb = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build-deb printed the .deb path"),
    );
    assert!(deb.is_file(), "{} is not a file", deb.display());
    assert!(
        deb.starts_with(out_dir),
        "{} not in {}",
        deb.display(),
        out_dir.display()
    );
    deb
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb (Debian package dpkg) is needed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Checks the listing and the control fields; returns the listing.
fn check_package(deb: &Path) -> String {
    let listing = dpkg_deb(&["-c"], deb);
    // Lines: "-rw-r--r-- root/root  1234 2026-01-01 00:00 ./usr/bin/hark".
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() >= 6).then(|| (fields[0], fields[1], fields[5]))
        })
        .collect();
    for file in FILES {
        assert!(
            entries.iter().any(|(_, _, path)| path == file),
            "{file} missing from the package:\n{listing}"
        );
    }
    for (mode, owner, path) in &entries {
        assert_eq!(*owner, "root/root", "{path} is owned by {owner}");
        let expected = if mode.starts_with('d') || *path == "./usr/bin/hark" {
            "rwxr-xr-x"
        } else {
            "rw-r--r--"
        };
        assert_eq!(&mode[1..], expected, "{path} has mode {mode}");
    }

    let control = dpkg_deb(&["-I"], deb);
    let value = |name: &str| {
        control
            .lines()
            .map(str::trim_start)
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} field in:\n{control}"))
            .to_owned()
    };
    assert_eq!(value("Package"), "hark");
    assert_eq!(value("Version"), env!("CARGO_PKG_VERSION"));
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    assert_eq!(
        value("Architecture"),
        String::from_utf8_lossy(&arch.stdout).trim()
    );
    assert!(value("Depends").contains("libc6"), "{control}");
    listing
}

/// A stand-in for `hark` that answers what build-deb asks.
fn fake_hark(dir: &Path) -> PathBuf {
    let path = dir.join("hark");
    let script = format!(
        r##"#!/bin/sh
case "$1" in
  --version) echo "hark {version}" ;;
  manpage) printf '.TH hark 1\n' >"$2/hark.1"; printf '.TH hark-say 1\n' >"$2/hark-say.1"; echo "$2/hark.1" ;;
  completions) echo "# $2 completion for hark" ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"##,
        version = env!("CARGO_PKG_VERSION")
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn the_package_layout_is_complete_with_a_stand_in_binary() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(&fake_hark(dir.path()), &dir.path().join("out"));
    let listing = check_package(&deb);
    assert!(
        listing.contains("./usr/share/man/man1/hark-say.1.gz"),
        "every page is installed:\n{listing}"
    );
    assert!(deb
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("hark_{}_", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn a_binary_of_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_hark(dir.path());
    let text = std::fs::read_to_string(&fake).unwrap();
    std::fs::write(&fake, text.replace(env!("CARGO_PKG_VERSION"), "0.0.0-old")).unwrap();
    let out = Command::new(repo().join("packaging/build-deb"))
        .arg(&fake)
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.0.0-old") && stderr.contains("rebuild"),
        "{stderr}"
    );
}

#[test]
fn the_real_binary_packages() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(Path::new(env!("CARGO_BIN_EXE_hark")), dir.path());
    check_package(&deb);
    let control = dpkg_deb(&["-I"], &deb);
    // dpkg-shlibdeps found the libraries the binary links.
    for lib in ["libasound2", "libespeak-ng1", "libopus0", "liblc3-0"] {
        assert!(control.contains(lib), "Depends lacks {lib}:\n{control}");
    }
}

#[test]
fn the_desktop_entry_runs_hark_and_names_its_icon() {
    let entry = std::fs::read_to_string(repo().join("packaging/dev.hark.Hark.desktop")).unwrap();
    let main: Vec<&str> = entry
        .lines()
        .skip_while(|l| *l != "[Desktop Entry]")
        .take_while(|l| !l.starts_with("[Desktop Action"))
        .collect();
    let value = |key: &str| {
        main.iter()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the desktop entry:\n{entry}"))
    };
    assert_eq!(value("Type"), "Application");
    assert_eq!(value("Exec"), "hark ptt toggle");
    // The icon is found by the name it is installed under.
    assert_eq!(value("Icon"), "dev.hark.Hark");
    assert!(repo().join("packaging/dev.hark.Hark.svg").is_file());
    // Every action named is defined, and runs hark.
    for action in value("Actions").split(';').filter(|a| !a.is_empty()) {
        let header = format!("[Desktop Action {action}]");
        let section: Vec<&str> = entry
            .lines()
            .skip_while(|l| *l != header)
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .collect();
        assert!(
            section.iter().any(|l| l.starts_with("Exec=hark ")),
            "{header} missing or without Exec=hark:\n{entry}"
        );
    }
    // desktop-file-validate, where installed (package desktop-file-utils).
    if let Ok(out) = Command::new("desktop-file-validate")
        .arg(repo().join("packaging/dev.hark.Hark.desktop"))
        .output()
    {
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let svg = std::fs::read_to_string(repo().join("packaging/dev.hark.Hark.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
}
