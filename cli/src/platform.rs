//! What differs between Unix and Windows, in one place: where files live by default and
//! which signals stop a command. Windows gets the nearest behaviour where a Unix
//! feature has no equivalent (docs/platforms.md).

use std::path::PathBuf;

/// The default directory of `kind` (`data` for the server, `state` for agents):
/// on Unix `$XDG_<KIND>_HOME/netbore` or `~/.local/<kind>/netbore`; on Windows
/// `%LOCALAPPDATA%\netbore\<kind>`; else `./netbore-<kind>`.
pub(crate) fn default_dir(kind: &str) -> PathBuf {
    #[cfg(windows)]
    if let Some(local) = std::env::var_os("LOCALAPPDATA") {
        return PathBuf::from(local).join("netbore").join(kind);
    }
    let xdg = format!("XDG_{}_HOME", kind.to_ascii_uppercase());
    if let Some(x) = std::env::var_os(xdg) {
        return PathBuf::from(x).join("netbore");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home)
            .join(".local")
            .join(kind)
            .join("netbore");
    }
    PathBuf::from(format!("netbore-{kind}"))
}

/// The directory of the agent's config file: on Unix `$XDG_CONFIG_HOME/netbore` or
/// `~/.config/netbore`; on Windows `%APPDATA%\netbore`; else `./netbore-config`.
pub(crate) fn config_dir() -> PathBuf {
    #[cfg(windows)]
    if let Some(roaming) = std::env::var_os("APPDATA") {
        return PathBuf::from(roaming).join("netbore");
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("netbore");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".config").join("netbore");
    }
    PathBuf::from("netbore-config")
}

/// Completes when the user or the system asks the command to stop: Ctrl-C (SIGINT)
/// or SIGTERM on Unix; Ctrl-C, Ctrl-Break, closing the console window, log-off or
/// shut-down on Windows.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_shutdown};
        if let (Ok(mut brk), Ok(mut close), Ok(mut shutdown)) =
            (ctrl_break(), ctrl_close(), ctrl_shutdown())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = brk.recv() => {}
                _ = close.recv() => {}
                _ = shutdown.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The stop signals of a long-running command, heard from the moment this is made:
/// a second signal is noticed however soon it follows the first (a server's drain
/// exits at once on it).
pub(crate) struct StopSignals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    pub(crate) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                unix: signal(SignalKind::interrupt())
                    .ok()
                    .zip(signal(SignalKind::terminate()).ok()),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Completes at the next stop signal ([`stop_signal`]'s).
    pub(crate) async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.unix {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        stop_signal().await;
    }
}

/// The machine's physical memory in bytes, where the system says (Linux).
pub(crate) fn physical_memory() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line
            .trim_start_matches("MemTotal:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
