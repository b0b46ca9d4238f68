//! Strict settings for Hark, shared by every crate that has any.
//!
//! Each crate owns its settings type: a serde struct with its defaults, the
//! range checks the type system cannot express ([`Section::validate`]) and a
//! comment for every key ([`Section::KEYS`]), all next to the code that uses
//! them. This crate knows no section; it only supplies the vocabulary
//! ([`InvalidValue`], [`check_range`], [`KeyDoc`]) and the machinery that
//! turns any such type into a configuration file:
//!
//! - [`parse`] / [`load`]: TOML in, a checked value out; a misspelt key, a
//!   value of the wrong type or out of range is an error naming the dotted
//!   key, the file and the line ([`ConfigError`]);
//! - [`search_paths`]: where the file is looked for (XDG);
//! - [`Override`] / [`with_overrides`]: `--set KEY=VALUE` on top, checked as
//!   strictly as the file;
//! - [`render`]: the defaults as a commented file, values serialised from
//!   `Default` so they cannot drift from the code.
//!
//! The application assembles its sections into one type (Hark's binary does,
//! in `config.rs`), so there is no cycle between configuration and runtime.

use std::fmt;

mod file;
mod overrides;
mod render;

pub use file::{
    load, load_file, parse, search_paths, search_paths_from, ConfigError, ConfigSource, Loaded,
};
pub use overrides::{with_overrides, Override, COMMAND_LINE};
pub use render::{render, undocumented, Docs};

/// A settings type that can be read from a file: serde both ways, with
/// defaults, and checks beyond its types.
pub trait Settings: serde::Serialize + serde::de::DeserializeOwned + Default + Clone {
    /// Checks every value the type system cannot; the error names the first
    /// bad key (dotted, relative to this type) and what it allows.
    fn validate(&self) -> Result<(), InvalidValue>;
}

/// One `[section]` of a configuration file, owned by the crate that uses it.
pub trait Section: Settings {
    /// The comment above the section's header.
    const DOC: &'static str;
    /// Comments of nested tables, by path relative to the section
    /// (`"barge_in"` for `[conversation.barge_in]`).
    const TABLES: &'static [(&'static str, &'static str)] = &[];
    /// The comment above each key, in the order the default file lists them.
    const KEYS: &'static [KeyDoc];
}

/// The comment above one key of the default file.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// Dotted key relative to its section, e.g. `frame_ms` or
    /// `barge_in.min_words`.
    pub key: &'static str,
    pub doc: &'static str,
    /// For keys unset by default (`Option`s): a value shown commented out.
    pub example: Option<&'static str>,
}

/// A key that is set by default.
pub const fn doc(key: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: None,
    }
}

/// A key unset by default, with an example value shown commented out.
pub const fn unset(key: &'static str, doc: &'static str, example: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: Some(example),
    }
}

/// A value outside what its key allows; [`parse`] adds the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// Dotted key.
    pub key: String,
    /// The value as written (strings quoted).
    pub value: String,
    /// What the key allows ("between 0 and 3", "10, 20 or 30").
    pub allowed: String,
}

impl InvalidValue {
    pub fn new(key: &str, value: impl fmt::Display, allowed: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    /// The same error with its key placed inside `section`.
    pub fn within(mut self, section: &str) -> Self {
        self.key = format!("{section}.{}", self.key);
        self
    }
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {} is out of range: must be {}",
            self.key, self.value, self.allowed
        )
    }
}

impl std::error::Error for InvalidValue {}

/// `Ok` when `lo <= value <= hi`.
pub fn check_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), InvalidValue> {
    if lo <= value && value <= hi {
        Ok(())
    } else {
        Err(InvalidValue::new(
            key,
            value,
            format!("between {lo} and {hi}"),
        ))
    }
}

/// `Ok` when `value` (a model name or path) is not blank.
pub fn check_not_empty(key: &str, value: &str) -> Result<(), InvalidValue> {
    if value.trim().is_empty() {
        Err(InvalidValue::new(
            key,
            format!("{value:?}"),
            "a name or a path",
        ))
    } else {
        Ok(())
    }
}

/// `Ok` when `value` is a Wyoming server's address (`tcp://HOST:PORT` or
/// `unix:///PATH`); `needed`: the key's backend is "wyoming", so it must be
/// set. The full parse, with the reason, is the client's.
pub fn check_wyoming_uri(key: &str, value: Option<&str>, needed: bool) -> Result<(), InvalidValue> {
    let shaped = |uri: &str| {
        uri.strip_prefix("tcp://").is_some_and(|rest| {
            rest.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        }) || uri
            .strip_prefix("unix://")
            .is_some_and(|path| path.starts_with('/'))
    };
    match value {
        None if !needed => Ok(()),
        Some(uri) if shaped(uri.trim_end_matches('/')) => Ok(()),
        value => Err(InvalidValue::new(
            key,
            value.map_or("unset".into(), |v| format!("{v:?}")),
            "a Wyoming server's address, \"tcp://HOST:PORT\" or \"unix:///PATH\" \
             (required when backend = \"wyoming\")",
        )),
    }
}

/// [`check_range`] for an optional value: `None` is always fine.
pub fn check_optional_range<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    value: Option<T>,
    lo: T,
    hi: T,
) -> Result<(), InvalidValue> {
    value.map_or(Ok(()), |v| check_range(key, v, lo, hi))
}

#[cfg(test)]
mod tests;
