//! sd_notify(3) without libsystemd: tells systemd (`Type=notify`) that Hark
//! is ready, what it is doing, that it is still alive, and that it is
//! stopping.
//!
//! systemd passes `NOTIFY_SOCKET`, a unix datagram socket given as a path
//! (`/run/user/1000/systemd/notify`) or an abstract name (`@name`); each
//! message is one datagram of `KEY=VALUE` lines. Outside systemd the
//! variable is unset and every call here is a no-op, so the daemon calls
//! them unconditionally.
//!
//! The watchdog: with `WatchdogSec=` systemd sets `WATCHDOG_USEC` (and
//! `WATCHDOG_PID`, the process it is meant for) and restarts the service if
//! `WATCHDOG=1` does not arrive within that time. [`watchdog_interval`] says
//! how often to send it (half the timeout, as sd_watchdog_enabled(3)
//! advises). Send it from the loop whose liveness matters (the core event
//! loop), not from a timer thread that would keep beating while the rest
//! hangs.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// `READY=1`: start-up is complete (models loaded, D-Bus name taken).
pub fn ready() -> io::Result<()> {
    notify("READY=1")
}

/// `STATUS=...`: one line shown by `systemctl --user status hark`.
pub fn status(text: &str) -> io::Result<()> {
    notify(&status_message(text))
}

/// `WATCHDOG=1`: still alive.
pub fn watchdog() -> io::Result<()> {
    notify("WATCHDOG=1")
}

/// `STOPPING=1`: shutting down on request.
pub fn stopping() -> io::Result<()> {
    notify("STOPPING=1")
}

/// `EXTEND_TIMEOUT_USEC=...`: start-up (e.g. loading a large model) needs
/// `extra` more time than `TimeoutStartSec=` allows.
pub fn extend_timeout(extra: Duration) -> io::Result<()> {
    notify(&format!("EXTEND_TIMEOUT_USEC={}", extra.as_micros()))
}

/// Sends `state` to `$NOTIFY_SOCKET`; does nothing when it is unset.
pub fn notify(state: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state),
        _ => Ok(()),
    }
}

/// Sends `state` to the socket `socket` names: a path, or `@name` for an
/// abstract socket. Other forms (`vsock:...`) are refused.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    // Never block the caller (the conversation core pings the watchdog):
    // if the manager is not reading, the message is dropped, not waited on.
    sock.set_nonblocking(true)?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sd_notify: sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "NOTIFY_SOCKET={} is neither a path nor an @abstract name",
                socket.to_string_lossy()
            ),
        )),
    }
}

/// `STATUS=` with the text on one line (a newline would start a new key).
fn status_message(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

/// How often to send [`watchdog`]: half of `$WATCHDOG_USEC`, or `None` when
/// systemd runs no watchdog for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] with the environment passed in. `WATCHDOG_PID`,
/// when set, must be `our_pid` (the variables may have been inherited from
/// a parent the watchdog is meant for).
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    our_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_arrive_one_datagram_each_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let socket = path.as_os_str();
        notify_to(socket, "READY=1").unwrap();
        notify_to(socket, &status_message("Listening\nfor you")).unwrap();
        notify_to(socket, "WATCHDOG=1").unwrap();
        notify_to(socket, "STOPPING=1").unwrap();
        assert_eq!(receive(&server), "READY=1");
        assert_eq!(receive(&server), "STATUS=Listening for you");
        assert_eq!(receive(&server), "WATCHDOG=1");
        assert_eq!(receive(&server), "STOPPING=1");
    }

    #[test]
    fn abstract_sockets_are_reached_by_at_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("hark-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(receive(&server), "READY=1");
    }

    #[test]
    fn a_missing_socket_or_odd_address_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert!(notify_to(gone.as_os_str(), "READY=1").is_err());
        let e = notify_to(OsStr::new("vsock:2:1234"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    }

    /// The only test that touches the process environment (tests share
    /// it), and it restores what it changed.
    #[test]
    fn the_env_wrappers_follow_notify_socket() {
        let saved = std::env::var_os("NOTIFY_SOCKET");
        std::env::remove_var("NOTIFY_SOCKET");
        ready().unwrap();
        status("no socket: nothing sent").unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready().unwrap();
        status("Loading models").unwrap();
        watchdog().unwrap();
        extend_timeout(Duration::from_secs(20)).unwrap();
        stopping().unwrap();
        match saved {
            Some(v) => std::env::set_var("NOTIFY_SOCKET", v),
            None => std::env::remove_var("NOTIFY_SOCKET"),
        }
        assert_eq!(receive(&server), "READY=1");
        assert_eq!(receive(&server), "STATUS=Loading models");
        assert_eq!(receive(&server), "WATCHDOG=1");
        assert_eq!(receive(&server), "EXTEND_TIMEOUT_USEC=20000000");
        assert_eq!(receive(&server), "STOPPING=1");
    }

    #[test]
    fn the_watchdog_interval_is_half_the_timeout_for_our_pid_only() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 42), half);
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("42"), 42),
            half
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("41"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
    }
}
