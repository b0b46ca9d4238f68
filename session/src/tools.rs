//! The tools a model may call while it answers: Hark's own skills (time,
//! timers), run by the core that owns them, and the user's commands from
//! `[[tools]]`, run as processes without a shell, with a timeout, their
//! output captured as the result.
//!
//! Calls come in on the "hark-llm" thread. A skill call is a
//! [`Command::SkillTool`] to the core, whose answer the call waits for;
//! every call and its result is reported to the core too
//! ([`CoreInput::ToolUsed`]), for the event log and the history.

use std::io::Read;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc::{self, SyncSender};
use std::time::{Duration, Instant};

use hark_config::{check_range, InvalidValue};
use hark_llm::{ToolBox, ToolSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::{Command, CoreInput, Reply};

/// Most of a command's output kept as its result.
const OUTPUT_LIMIT: usize = 16 * 1024;
/// How long a skill call waits for the core.
const SKILL_WAIT: Duration = Duration::from_secs(5);

/// One `[[tools]]` entry: a command the model may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// What the model calls it (letters, digits, `_` and `-`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// Its parameters, as a JSON schema written in TOML
    /// (`[tools.parameters]` …).
    #[serde(default = "no_parameters")]
    pub parameters: Value,
    /// The program and its arguments; `{name}` in an argument is replaced
    /// by that parameter's value. No shell is involved.
    pub command: Vec<String>,
    /// Longest a run may take before it is killed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn no_parameters() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

fn default_timeout_ms() -> u64 {
    5000
}

impl ToolConfig {
    /// Checks the entry; keys relative to it.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(InvalidValue::new(
                "name",
                format!("{:?}", self.name),
                "1 to 64 letters, digits, _ or -",
            ));
        }
        if self.command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(InvalidValue::new(
                "command",
                format!("{:?}", self.command),
                "a program and its arguments, such as [\"date\", \"+%H:%M\"]",
            ));
        }
        if !self.parameters.is_object() {
            return Err(InvalidValue::new(
                "parameters",
                self.parameters.to_string(),
                "a table (a JSON schema of type object)",
            ));
        }
        check_range("timeout_ms", self.timeout_ms, 100, 600_000)
    }
}

/// Hark's toolbox; see the module documentation.
pub struct SessionTools {
    /// The core's inbox.
    inbox: SyncSender<CoreInput>,
    /// Offer the skills as tools.
    skills: bool,
    commands: Vec<ToolConfig>,
}

impl SessionTools {
    pub fn new(inbox: SyncSender<CoreInput>, skills: bool, commands: Vec<ToolConfig>) -> Self {
        Self {
            inbox,
            skills,
            commands,
        }
    }

    /// Asks the core to run skill tool `name`.
    fn skill(&self, name: &str, arguments: Value) -> String {
        let (tx, rx) = mpsc::sync_channel(1);
        let command = Command::SkillTool {
            name: name.to_owned(),
            arguments,
            reply: Reply::new(move |answer| {
                let _ = tx.send(answer);
            }),
        };
        if self.inbox.send(CoreInput::Command(command)).is_err() {
            return "error: Hark is shutting down".into();
        }
        rx.recv_timeout(SKILL_WAIT)
            .unwrap_or_else(|_| "error: no answer from Hark".into())
    }
}

impl ToolBox for SessionTools {
    fn specs(&self) -> Vec<ToolSpec> {
        let skills = self
            .skills
            .then(hark_skills::tools::specs)
            .into_iter()
            .flatten()
            .map(|(name, description, parameters)| ToolSpec {
                name: name.into(),
                description: description.into(),
                parameters,
            });
        let commands = self.commands.iter().map(|t| ToolSpec {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters: t.parameters.clone(),
        });
        skills.chain(commands).collect()
    }

    fn call(&mut self, name: &str, arguments: &str) -> String {
        let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
        let result = if let Some(tool) = self.commands.iter().find(|t| t.name == name) {
            run_command(tool, &args)
        } else if self.skills
            && hark_skills::tools::specs()
                .iter()
                .any(|(n, _, _)| *n == name)
        {
            self.skill(name, args)
        } else {
            format!("error: there is no tool called {name:?}")
        };
        let _ = self.inbox.send(CoreInput::ToolUsed {
            name: name.to_owned(),
            arguments: arguments.to_owned(),
            result: result.clone(),
        });
        result
    }
}

/// `tool.command` with `{param}` replaced by the call's arguments.
fn argv(tool: &ToolConfig, args: &Value) -> Result<Vec<String>, String> {
    let declared: Vec<String> = tool.parameters["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    tool.command
        .iter()
        .map(|part| {
            let mut out = part.clone();
            for name in &declared {
                let placeholder = format!("{{{name}}}");
                if !out.contains(&placeholder) {
                    continue;
                }
                let value = match &args[name] {
                    Value::Null => return Err(format!("the argument {name:?} is missing")),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out = out.replace(&placeholder, &value);
            }
            Ok(out)
        })
        .collect()
}

/// Runs the tool's command; its output (or why it failed) is the result.
fn run_command(tool: &ToolConfig, args: &Value) -> String {
    let argv = match argv(tool, args) {
        Ok(argv) => argv,
        Err(why) => return format!("error: {why}"),
    };
    let mut child = match Process::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return format!("error: cannot run {:?}: {e}", argv[0]),
    };
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let started = Instant::now();
    let timeout = Duration::from_millis(tool.timeout_ms);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return format!("error: waiting for {:?}: {e}", argv[0]),
        }
    };
    let output = |reader: Option<std::thread::JoinHandle<(String, bool)>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    let (stdout, cut) = output(out);
    let (stderr, _) = output(err);
    match status {
        None => format!(
            "error: {} timed out after {} ms",
            tool.name, tool.timeout_ms
        ),
        Some(status) if !status.success() => format!(
            "error: {} failed ({status}): {}",
            tool.name,
            stderr.trim().chars().take(500).collect::<String>()
        ),
        Some(_) if cut => format!("{} …(output cut at {OUTPUT_LIMIT} bytes)", stdout.trim()),
        Some(_) => stdout.trim().to_owned(),
    }
}

/// Reads a pipe to its end on a thread of its own, keeping the first
/// [`OUTPUT_LIMIT`] bytes (and whether there was more).
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<(String, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut cut = false;
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = OUTPUT_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
            cut |= n > room;
        }
        (String::from_utf8_lossy(&kept).into_owned(), cut)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(command: &[&str], timeout_ms: u64) -> ToolConfig {
        ToolConfig {
            name: "t".into(),
            description: "a test".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"who": {"type": "string"}, "n": {"type": "number"}}}),
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout_ms,
        }
    }

    #[test]
    fn a_command_gets_its_arguments_without_a_shell() {
        let t = tool(&["echo", "hello {who}", "{n}", "$HOME;", "{unknown}"], 5000);
        let out = run_command(&t, &serde_json::json!({"who": "world", "n": 3}));
        assert_eq!(out, "hello world 3 $HOME; {unknown}");
        let missing = run_command(&t, &serde_json::json!({"n": 3}));
        assert_eq!(missing, "error: the argument \"who\" is missing");
    }

    #[test]
    fn a_missing_failing_hanging_or_chatty_command_is_an_answer_not_a_crash() {
        let missing = run_command(&tool(&["hark-no-such-program"], 5000), &Value::Null);
        assert!(
            missing.starts_with("error: cannot run \"hark-no-such-program\""),
            "{missing}"
        );
        let failing = run_command(
            &tool(&["sh", "-c", "echo broken >&2; exit 3"], 5000),
            &Value::Null,
        );
        assert!(
            failing.contains("failed") && failing.contains("broken"),
            "{failing}"
        );
        let started = Instant::now();
        let hanging = run_command(&tool(&["sleep", "30"], 300), &Value::Null);
        assert_eq!(hanging, "error: t timed out after 300 ms");
        assert!(started.elapsed() < Duration::from_secs(3));
        let chatty = run_command(
            &tool(&["head", "-c", "5000000", "/dev/zero"], 10_000),
            &Value::Null,
        );
        assert!(chatty.len() < OUTPUT_LIMIT + 100, "{}", chatty.len());
        assert!(chatty.ends_with("(output cut at 16384 bytes)"));
    }

    #[test]
    fn entries_are_checked() {
        assert!(tool(&["date"], 5000).validate().is_ok());
        assert_eq!(tool(&[], 5000).validate().unwrap_err().key, "command");
        assert_eq!(
            tool(&["date"], 10).validate().unwrap_err().key,
            "timeout_ms"
        );
        let mut bad = tool(&["date"], 5000);
        bad.name = "rm -rf".into();
        assert_eq!(bad.validate().unwrap_err().key, "name");
    }
}
