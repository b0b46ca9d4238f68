//! Reading a settings file: TOML parsed with spans so every error names the
//! dotted key and its line, unknown keys caught even inside types that do
//! not deny them, and the XDG search for the file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::Settings;

/// Where a configuration came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file found; `searched` lists where Hark looked.
    Defaults {
        searched: Vec<PathBuf>,
    },
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Defaults { .. } => f.write_str("built-in defaults"),
        }
    }
}

/// A configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub config: T,
    pub source: ConfigSource,
}

/// Why a configuration could not be loaded. Each message names the file,
/// the dotted key and its line where there is one.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML at all.
    Syntax {
        origin: String,
        line: Option<usize>,
        message: String,
    },
    UnknownKey {
        key: String,
        origin: String,
        line: Option<usize>,
        /// The keys allowed there, when known (`a`, `b`, ...).
        expected: Option<String>,
    },
    /// A value of the wrong type, or an unknown variant.
    BadValue {
        key: Option<String>,
        origin: String,
        line: Option<usize>,
        message: String,
    },
    OutOfRange {
        key: String,
        value: String,
        allowed: String,
        origin: String,
        line: Option<usize>,
    },
}

/// ` in FILE line N`, or ` in FILE` when the line is unknown.
struct Place<'a>(&'a str, Option<usize>);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, " in {}", self.0)?;
        if let Some(line) = self.1 {
            write!(f, " line {line}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Syntax {
                origin,
                line,
                message,
            } => write!(f, "invalid TOML{}: {message}", Place(origin, *line)),
            ConfigError::UnknownKey {
                key,
                origin,
                line,
                expected,
            } => {
                write!(f, "unknown key {key}{}", Place(origin, *line))?;
                if let Some(expected) = expected {
                    write!(f, " (expected one of {expected})")?;
                }
                Ok(())
            }
            ConfigError::BadValue {
                key,
                origin,
                line,
                message,
            } => match key {
                Some(key) => write!(f, "{key}{}: {message}", Place(origin, *line)),
                None => write!(f, "{message}{}", Place(origin, *line)),
            },
            ConfigError::OutOfRange {
                key,
                value,
                allowed,
                origin,
                line,
            } => write!(
                f,
                "{key} = {value} is out of range: must be {allowed}{}",
                Place(origin, *line)
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Parses and validates a configuration. `origin` names it in messages
/// (usually the file's path).
pub fn parse<T: Settings>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let origin = origin.to_owned();
    // The spanned tree maps error positions to dotted keys and keys to lines.
    let tree = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim_end().to_owned(),
        origin: origin.clone(),
    })?;
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim_end().to_owned(),
        origin: origin.clone(),
    })?;

    let mut ignored: Vec<Vec<String>> = Vec::new();
    let result: Result<T, toml::de::Error> =
        serde_ignored::deserialize(deserializer, |path| ignored.push(path_segments(&path)));
    let config = match result {
        Ok(config) => config,
        Err(e) => return Err(deserialize_error(text, &tree, &e, origin)),
    };
    if let Some(key) = ignored.into_iter().next() {
        let line = span_of_key(tree.get_ref(), &key).map(|s| line_of(text, s.start));
        return Err(ConfigError::UnknownKey {
            key: key.join("."),
            origin,
            line,
            expected: None,
        });
    }
    config.validate().map_err(|bad| {
        let key: Vec<String> = bad.key.split('.').map(String::from).collect();
        ConfigError::OutOfRange {
            line: span_of_key(tree.get_ref(), &key).map(|s| line_of(text, s.start)),
            key: bad.key,
            value: bad.value,
            allowed: bad.allowed,
            origin,
        }
    })?;
    Ok(config)
}

/// Turns serde's error into one that names the dotted key: toml points at
/// the offending key or value; the tree says which key that is.
fn deserialize_error(
    text: &str,
    tree: &Spanned<DeTable<'_>>,
    e: &toml::de::Error,
    origin: String,
) -> ConfigError {
    let message = e.message().trim_end().to_owned();
    let span = e.span();
    let line = span.as_ref().map(|s| line_of(text, s.start));
    let key = span
        .as_ref()
        .and_then(|s| key_at(tree.get_ref(), s.start))
        .map(|k| k.join("."));
    // serde's wording: "unknown field `x`, expected one of `a`, `b`" (or
    // "expected `a`" / "there are no fields").
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let expected = rest
            .split_once(", expected one of ")
            .or_else(|| rest.split_once(", expected "))
            .map(|(_, list)| list.to_owned());
        let fallback = rest.split(',').next().unwrap_or(rest).trim_matches('`');
        return ConfigError::UnknownKey {
            key: key.unwrap_or_else(|| fallback.to_owned()),
            origin,
            line,
            expected,
        };
    }
    ConfigError::BadValue {
        key,
        origin,
        line,
        message,
    }
}

/// The dotted key whose name or value contains byte `offset`, deepest first.
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    for (key, value) in table {
        let name = key.get_ref().to_string();
        // Tables' own spans need not cover their contents (a `[section]`
        // header is far from its keys), so always look inside.
        if let Some(mut inner) = key_in_value(value, offset) {
            inner.insert(0, name);
            return Some(inner);
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return Some(vec![name]);
        }
    }
    None
}

fn key_in_value(value: &Spanned<DeValue<'_>>, offset: usize) -> Option<Vec<String>> {
    match value.get_ref() {
        DeValue::Table(table) => key_at(table, offset),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            if let Some(mut inner) = key_in_value(item, offset) {
                inner.insert(0, i.to_string());
                Some(inner)
            } else if item.span().contains(&offset) {
                Some(vec![i.to_string()])
            } else {
                None
            }
        }),
        _ => None,
    }
}

/// Where the dotted key is written (its name), if it is in the file.
fn span_of_key(table: &DeTable<'_>, key: &[String]) -> Option<Range<usize>> {
    let (first, rest) = key.split_first()?;
    let (name, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == first)?;
    if rest.is_empty() {
        return Some(name.span());
    }
    let mut value = value;
    let mut rest = rest;
    loop {
        match value.get_ref() {
            DeValue::Table(inner) => return span_of_key(inner, rest),
            DeValue::Array(items) => {
                let (index, tail) = rest.split_first()?;
                value = items.get(index.parse::<usize>().ok()?)?;
                if tail.is_empty() {
                    return Some(value.span());
                }
                rest = tail;
            }
            _ => return None,
        }
    }
}

/// serde_ignored's path as key segments (`Some`/newtype levels dropped).
fn path_segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    let mut segments = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_segments(parent),
    };
    match path {
        Path::Seq { index, .. } => segments.push(index.to_string()),
        Path::Map { key, .. } => segments.push(key.clone()),
        _ => {}
    }
    segments
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads and parses one file.
pub fn load_file<T: Settings>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// The files looked for, in order, when no path is given: `name` (such as
/// `hark/config.toml`) under `$XDG_CONFIG_HOME` (default `~/.config`),
/// then under each of `$XDG_CONFIG_DIRS` (default `/etc/xdg`).
pub fn search_paths(name: &str) -> Vec<PathBuf> {
    search_paths_from(
        name,
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
        std::env::var_os("XDG_CONFIG_DIRS"),
    )
}

/// [`search_paths`] with the environment passed in. Relative XDG paths are
/// ignored, as the base directory specification requires.
pub fn search_paths_from(
    name: &str,
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
    xdg_config_dirs: Option<std::ffi::OsString>,
) -> Vec<PathBuf> {
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    let mut paths = Vec::new();
    let user = xdg_config_home
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .and_then(absolute)
        .or_else(|| {
            home.filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
                .and_then(absolute)
        });
    if let Some(dir) = user {
        paths.push(dir.join(name));
    }
    let system = xdg_config_dirs
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/etc/xdg".into());
    for dir in std::env::split_paths(&system) {
        if dir.is_absolute() {
            paths.push(dir.join(name));
        }
    }
    paths
}

/// Loads the explicit file (which must exist), else the first of
/// `searched` that exists, else the defaults.
pub fn load<T: Settings>(
    explicit: Option<&Path>,
    searched: &[PathBuf],
) -> Result<Loaded<T>, ConfigError> {
    let path = match explicit {
        Some(path) => Some(path.to_owned()),
        None => searched.iter().find(|p| p.exists()).cloned(),
    };
    match path {
        Some(path) => Ok(Loaded {
            config: load_file(&path)?,
            source: ConfigSource::File(path),
        }),
        None => Ok(Loaded {
            config: T::default(),
            source: ConfigSource::Defaults {
                searched: searched.to_vec(),
            },
        }),
    }
}
