//! systemd's notify protocol, spoken directly (one datagram per message on `$NOTIFY_SOCKET`):
//! `READY=1` once mot serves, `WATCHDOG=1` at half the watchdog interval while its supervisors
//! answer, `RELOADING=1`/`READY=1` around a SIGHUP reload, `STOPPING=1` when it stops. Without
//! `$NOTIFY_SOCKET` (not under systemd) every call is a no-op. `deploy/mot.service` uses it.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens, if it does.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) and `$WATCHDOG_USEC`
    /// (honoured when `$WATCHDOG_PID` is unset or names this process).
    pub fn from_env() -> Self {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|target| {
            let addr = if let Some(name) = target.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&target).ok()?
            };
            let socket = UnixDatagram::unbound().ok()?;
            Some((socket, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to send `WATCHDOG=1` (half the interval systemd gave), if it asked for it.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog.map(|w| w / 2))
    }

    /// Sends `state` (e.g. `READY=1\nSTATUS=serving`); a failure is logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(error) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!(%error, "systemd notification not sent");
            }
        }
    }
}
