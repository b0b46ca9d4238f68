//! `[skills]`: the intent layer in front of the model.

use hark_config::{check_range, doc, InvalidValue, KeyDoc, Section, Settings};
use serde::{Deserialize, Serialize};

/// The `[skills]` section of Hark's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SkillsConfig {
    /// Answer time, date, timers, stop, repeat and volume requests without
    /// the model.
    pub enabled: bool,
    /// Longest timer accepted.
    pub max_timer_hours: u32,
}

impl Default for SkillsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_timer_hours: 24,
        }
    }
}

impl Settings for SkillsConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_range("max_timer_hours", self.max_timer_hours, 1, 8760)
    }
}

impl Section for SkillsConfig {
    const DOC: &'static str = "Skills that need no model: the time and date, timers, \"stop\", \
         \"repeat that\", \"louder\" and \"quieter\" are answered at once, exactly, \
         before any model sees what was said.";
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "enabled",
            "Answer those requests without the model; false sends everything to the \
             model. true or false.",
        ),
        doc(
            "max_timer_hours",
            "Longest timer Hark agrees to set, in hours. 1 to 8760.",
        ),
    ];
}
