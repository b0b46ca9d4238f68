//! `[wyoming]`: Hark as a Wyoming server for Home Assistant.

use hark_config::{
    check_range, check_wyoming_uri, doc, unset, InvalidValue, KeyDoc, Section, Settings,
};
use serde::{Deserialize, Serialize};

/// The `[wyoming]` section of Hark's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WyomingConfig {
    /// Where the daemon serves Wyoming; `None`: it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Clients served at once.
    pub max_connections: usize,
}

impl Default for WyomingConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_connections: 16,
        }
    }
}

impl Settings for WyomingConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_wyoming_uri("listen", self.listen.as_deref(), false)?;
        check_range("max_connections", self.max_connections, 1, 256)
    }
}

impl Section for WyomingConfig {
    const DOC: &'static str = "Hark as a Wyoming server (Home Assistant's protocol): its Whisper \
         and its voice offered to Home Assistant's Wyoming integration.";
    const KEYS: &'static [KeyDoc] = &[
        unset(
            "listen",
            "Where `hark daemon` serves Wyoming, \"tcp://HOST:PORT\" or \"unix:///PATH\". \
             Unset: not at all. 127.0.0.1 serves this machine only; 0.0.0.0 the network. \
             Run by systemd, Hark has no network without its drop-in (network.conf), \
             not even 127.0.0.1.",
            "\"tcp://127.0.0.1:10700\"",
        ),
        doc(
            "max_connections",
            "Clients served at once; more are told to try later. 1 to 256.",
        ),
    ];
}
