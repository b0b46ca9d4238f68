//! `--set KEY=VALUE`: settings given on the command line, applied over a
//! loaded configuration and checked as strictly as a file.

use crate::file::parse;
use crate::{ConfigError, Settings};

/// One setting given on the command line (`--set KEY=VALUE`), applied
/// over the configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted key, as in `hark config default` (`conversation.barge_in.min_words`).
    pub key: String,
    pub value: toml::Value,
}

impl Override {
    pub fn new(key: &str, value: impl Into<toml::Value>) -> Self {
        Self {
            key: key.to_owned(),
            value: value.into(),
        }
    }
}

impl std::str::FromStr for Override {
    type Err = String;

    /// `KEY=VALUE`; VALUE is read as TOML (`3`, `true`, `"x"`, `[1, 2]`)
    /// and otherwise taken as a plain string, so `mode=always` works.
    fn from_str(text: &str) -> Result<Self, String> {
        let (key, raw) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|part| part.trim().is_empty()) {
            return Err(format!(
                "{text:?}: the key must be dotted names, such as audio.echo_tail_ms"
            ));
        }
        let raw = raw.trim();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
        Ok(Self::new(key, value))
    }
}

/// Where command-line settings are said to come from in messages.
pub const COMMAND_LINE: &str = "the command line";

/// `config` with `overrides` applied in order, checked as strictly as a
/// file: an unknown key or a bad value is an error naming the key.
pub fn with_overrides<T: Settings>(config: T, overrides: &[Override]) -> Result<T, ConfigError> {
    if overrides.is_empty() {
        return Ok(config);
    }
    let mut table =
        toml::Table::try_from(&config).expect("a configuration serialises to a TOML table");
    for o in overrides {
        let parts: Vec<&str> = o.key.split('.').map(str::trim).collect();
        let (last, sections) = parts.split_last().expect("checked when parsed");
        let mut at = &mut table;
        for (depth, section) in sections.iter().enumerate() {
            at = at
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::UnknownKey {
                    key: o.key.clone(),
                    origin: COMMAND_LINE.into(),
                    line: None,
                    expected: Some(format!(
                        "{} is a value, not a section",
                        parts[..=depth].join(".")
                    )),
                })?;
        }
        at.insert(last.to_string(), o.value.clone());
    }
    let text = toml::to_string(&table).expect("a TOML table serialises");
    parse(&text, COMMAND_LINE).map_err(ConfigError::without_line)
}

impl ConfigError {
    /// Lines of generated text mean nothing to the user.
    pub(crate) fn without_line(mut self) -> Self {
        match &mut self {
            ConfigError::Syntax { line, .. }
            | ConfigError::UnknownKey { line, .. }
            | ConfigError::BadValue { line, .. }
            | ConfigError::OutOfRange { line, .. } => *line = None,
            ConfigError::Read { .. } => {}
        }
        self
    }
}
