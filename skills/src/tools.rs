//! The skills as tools a model can call (OpenAI `tools`): the time, and
//! setting, listing and cancelling timers. The specs are JSON schemas; the
//! calls run against the same [`Skills`] the voice uses.

use serde_json::{json, Value};

use crate::{numbers::say_duration, Skills};

/// (name, description, parameters as a JSON schema) of each skill tool.
pub fn specs() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "get_time",
            "The current local date and time.",
            json!({"type": "object", "properties": {}}),
        ),
        (
            "set_timer",
            "Start a timer that chimes and says its label when it goes off.",
            json!({
                "type": "object",
                "properties": {
                    "seconds": {"type": "number", "description": "How long, in seconds."},
                    "label": {"type": "string", "description": "What it is for, e.g. tea."}
                },
                "required": ["seconds"]
            }),
        ),
        (
            "list_timers",
            "The running timers and how much time each has left.",
            json!({"type": "object", "properties": {}}),
        ),
        (
            "cancel_timer",
            "Cancel a timer by its label, or the latest one.",
            json!({
                "type": "object",
                "properties": {"label": {"type": "string"}}
            }),
        ),
    ]
}

/// What a tool call did.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolAnswer {
    /// What to tell the model.
    pub result: String,
    pub timers_changed: bool,
}

impl Skills {
    /// Runs skill tool `name` with `arguments`; `None` when it is not one.
    pub fn call_tool(
        &mut self,
        name: &str,
        arguments: &Value,
        now_unix_ms: u64,
    ) -> Option<ToolAnswer> {
        let answer = |result: String, timers_changed| ToolAnswer {
            result,
            timers_changed,
        };
        Some(match name {
            "get_time" => answer(
                self.local(now_unix_ms)
                    .strftime("%A, %B %-d, %Y, %-I:%M %p")
                    .to_string(),
                false,
            ),
            "set_timer" => {
                let Some(seconds) = arguments["seconds"].as_f64() else {
                    return Some(answer("error: seconds must be a number".into(), false));
                };
                let label = arguments["label"].as_str().unwrap_or("");
                match self.set_timer(seconds, label, now_unix_ms) {
                    Ok(timer) => answer(
                        format!(
                            "timer {} set for {}",
                            timer.id,
                            say_duration(std::time::Duration::from_millis(timer.length_ms))
                        ),
                        true,
                    ),
                    Err(why) => answer(format!("error: {why}"), false),
                }
            }
            "list_timers" => answer(self.time_left(now_unix_ms), false),
            "cancel_timer" => match self.cancel(arguments["label"].as_str()) {
                Ok(timer) => answer(format!("{} is cancelled", timer.name()), true),
                Err(why) => answer(format!("error: {why}"), false),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SkillsConfig;

    #[test]
    fn skill_tools_run_against_the_same_timers() {
        let (mut s, _) = Skills::new(SkillsConfig::default(), None);
        s.set_time_zone(jiff::tz::TimeZone::UTC);
        let now = 1_796_312_700_000;
        let time = s.call_tool("get_time", &json!({}), now).unwrap();
        assert_eq!(time.result, "Thursday, December 3, 2026, 3:45 PM");
        let set = s
            .call_tool("set_timer", &json!({"seconds": 90, "label": "tea"}), now)
            .unwrap();
        assert_eq!(set.result, "timer t1 set for 1 minute and 30 seconds");
        assert!(set.timers_changed);
        assert_eq!(s.timers().len(), 1);
        let bad = s
            .call_tool("set_timer", &json!({"seconds": "soon"}), now)
            .unwrap();
        assert!(bad.result.starts_with("error:"));
        let zero = s
            .call_tool("set_timer", &json!({"seconds": 0}), now)
            .unwrap();
        assert!(zero.result.contains("at least a second"));
        assert!(s
            .call_tool("list_timers", &json!({}), now)
            .unwrap()
            .result
            .contains("tea"));
        assert!(
            s.call_tool("cancel_timer", &json!({"label": "tea"}), now)
                .unwrap()
                .timers_changed
        );
        assert!(s.call_tool("launch_rockets", &json!({}), now).is_none());
        assert_eq!(specs().len(), 4);
    }
}
