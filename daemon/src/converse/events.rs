//! `--events FILE`: one JSON object per line, `{"t_ms": …, "event": "…", …}`,
//! with `t_ms` on the input timeline (ms since the first input frame).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

pub struct EventLog {
    out: Option<BufWriter<File>>,
    failed: bool,
}

impl EventLog {
    /// A log that writes nothing.
    pub fn none() -> Self {
        Self {
            out: None,
            failed: false,
        }
    }

    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create the event log {}", path.display()))?;
        Ok(Self {
            out: Some(BufWriter::new(file)),
            failed: false,
        })
    }

    /// Appends one event; `fields` must be a JSON object (anything else is
    /// stored under "value").
    pub fn write(&mut self, t_ms: u64, event: &str, fields: serde_json::Value) {
        tracing::trace!(t_ms, event, %fields, "event");
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let mut line = serde_json::Map::new();
        line.insert("t_ms".into(), t_ms.into());
        line.insert("event".into(), event.into());
        match fields {
            serde_json::Value::Object(map) => line.extend(map),
            other => {
                line.insert("value".into(), other);
            }
        }
        let written = serde_json::to_writer(&mut *out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(e) = written {
            if !self.failed {
                tracing::error!("cannot write the event log: {e}; further events are lost");
                self.failed = true;
            }
        }
    }

    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }
}
