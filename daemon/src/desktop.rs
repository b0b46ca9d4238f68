//! Hark on the desktop: the `[desktop]` section, and desktop notifications
//! (`org.freedesktop.Notifications`) for timers going off and errors.
//!
//! Notifications are opt-in (`[desktop] notify`). They come from a task of
//! their own that reads the daemon's events, as the D-Bus signals do; the
//! core knows nothing of them, and a slow or missing notification server
//! delays only this task.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hark_config::{doc, InvalidValue, KeyDoc, Section, Settings};
use hark_session::SessionEvent;
use serde::{Deserialize, Serialize};

/// `[desktop]`: Hark and the other applications of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DesktopConfig {
    /// Timers and errors as desktop notifications.
    pub notify: bool,
    /// Serve Hark's voice to other applications (Spiel's speech provider).
    pub speech_provider: bool,
}

impl Default for DesktopConfig {
    fn default() -> Self {
        Self {
            notify: false,
            speech_provider: true,
        }
    }
}

impl Settings for DesktopConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        Ok(())
    }
}

impl Section for DesktopConfig {
    const DOC: &'static str =
        "Hark and the desktop's other applications (hark daemon; read when it starts).";
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "notify",
            "Show a desktop notification (org.freedesktop.Notifications) when a \
             timer goes off and when something goes wrong (a device, a model).",
        ),
        doc(
            "speech_provider",
            "Lend Hark's voice to other applications: serve \
             org.freedesktop.Speech.Provider (GNOME's Spiel) as \
             dev.hark.Speech.Provider. The voice is loaded at the first request.",
        ),
    ];
}

const NOTIFICATIONS: &str = "org.freedesktop.Notifications";
const NOTIFICATIONS_PATH: &str = "/org/freedesktop/Notifications";
/// The desktop entry and icon name (`packaging/dev.hark.Hark.desktop`).
pub const APP_ID: &str = "dev.hark.Hark";
/// The same error again within this long is not shown again (a missing
/// microphone is retried, and reported, every 2 s).
const QUIET_AFTER_ERROR: Duration = Duration::from_secs(60);
/// A notification server slower than this is given up on for that one.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// What one notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub summary: String,
    pub body: String,
    /// The freedesktop urgency: 1 normal, 2 critical.
    pub urgency: u8,
    /// Errors of the same code are shown once a minute at most.
    pub error_code: Option<&'static str>,
}

/// The notification an event deserves, if any.
pub fn note(event: &SessionEvent) -> Option<Note> {
    match event {
        SessionEvent::TimerFired { label, .. } => Some(Note {
            summary: if label.is_empty() {
                "Timer done".into()
            } else {
                format!("Timer done: {label}")
            },
            body: "Hark's timer went off.".into(),
            urgency: 1,
            error_code: None,
        }),
        SessionEvent::Error { code, message } => Some(Note {
            summary: format!("Hark: {code} problem"),
            body: message.clone(),
            urgency: 1,
            error_code: Some(code),
        }),
        _ => None,
    }
}

/// Whether `event` may become a notification (the daemon forwards only
/// those to [`notify_events`]).
pub fn is_notified(event: &SessionEvent) -> bool {
    matches!(
        event,
        SessionEvent::TimerFired { .. } | SessionEvent::Error { .. }
    )
}

/// Sends a notification for each event that deserves one, until the
/// daemon's events end.
pub async fn notify_events(
    connection: zbus::Connection,
    mut events: tokio::sync::mpsc::UnboundedReceiver<SessionEvent>,
) {
    let mut shown: HashMap<&'static str, Instant> = HashMap::new();
    let mut warned = false;
    while let Some(event) = events.recv().await {
        let Some(note) = note(&event) else {
            continue;
        };
        if let Some(code) = note.error_code {
            let now = Instant::now();
            if shown
                .get(code)
                .is_some_and(|at| now.duration_since(*at) < QUIET_AFTER_ERROR)
            {
                continue;
            }
            shown.insert(code, now);
        }
        match tokio::time::timeout(NOTIFY_TIMEOUT, send(&connection, &note)).await {
            Ok(Ok(())) => warned = false,
            failed => {
                // Said once per outage, not per event.
                if !warned {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} s", NOTIFY_TIMEOUT.as_secs()),
                    };
                    tracing::warn!("cannot show a desktop notification ({NOTIFICATIONS}): {why}");
                    warned = true;
                }
            }
        }
    }
}

/// One `Notify` call.
async fn send(connection: &zbus::Connection, note: &Note) -> zbus::Result<()> {
    use zbus::Variant;
    let mut hints: HashMap<&str, Variant<'_>> = HashMap::new();
    hints.insert("desktop-entry", Variant::from(APP_ID));
    hints.insert("urgency", Variant::from(note.urgency));
    let actions: Vec<&str> = Vec::new();
    connection
        .call_method(
            Some(NOTIFICATIONS),
            NOTIFICATIONS_PATH,
            Some(NOTIFICATIONS),
            "Notify",
            &(
                "Hark",
                0u32,
                APP_ID,
                note.summary.as_str(),
                note.body.as_str(),
                actions,
                hints,
                -1i32,
            ),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_and_errors_are_notified_and_nothing_else() {
        let fired = SessionEvent::TimerFired {
            id: "t1".into(),
            label: "tea".into(),
        };
        assert!(is_notified(&fired));
        assert_eq!(note(&fired).unwrap().summary, "Timer done: tea");
        let error = SessionEvent::Error {
            code: "audio",
            message: "no microphone".into(),
        };
        let shown = note(&error).unwrap();
        assert_eq!(shown.body, "no microphone");
        assert_eq!(shown.error_code, Some("audio"));
        let other = SessionEvent::Muted { muted: true };
        assert!(!is_notified(&other) && note(&other).is_none());
    }

    #[test]
    fn notifications_are_off_and_the_provider_on_by_default() {
        let config = DesktopConfig::default();
        assert!(!config.notify);
        assert!(config.speech_provider);
    }
}
