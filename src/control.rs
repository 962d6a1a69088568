//! The one control channel of the daemon: `Control::{Reload, Shutdown}` messages from OS
//! signals (SIGHUP, SIGTERM, SIGINT), the config watcher and tests, consumed by one loop.

use tokio::sync::mpsc;

/// A request to the daemon's control loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config file; keep the old one if the new one is invalid.
    Reload,
    /// Stop gracefully.
    Shutdown,
}

/// Sending half, cloned by every source of control messages.
pub type ControlSender = mpsc::Sender<Control>;

/// A channel with room for a few pending requests (the loop coalesces repeats).
pub fn channel() -> (ControlSender, mpsc::Receiver<Control>) {
    mpsc::channel(16)
}

/// Forward SIGHUP as `Reload` and SIGTERM/SIGINT as `Shutdown` until the receiver is gone.
pub fn spawn_signal_forwarder(tx: ControlSender) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = hup.recv() => Control::Reload,
                _ = term.recv() => Control::Shutdown,
                _ = int.recv() => Control::Shutdown,
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}
