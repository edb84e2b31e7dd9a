//! SIGINT and SIGTERM (and SIGHUP), forwarded to every server that asked.
//!
//! The handler is installed once per process (`ctrlc` allows no more) and
//! stays: it sends a trigger to each subscribed server, and does nothing
//! else. A signal that arrives while no server is subscribed is logged and
//! otherwise ignored.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use crossbeam_channel::Sender;

use super::{lock, Trigger};
use crate::error::Error;

static SUBSCRIBERS: Mutex<Vec<(u64, Sender<Trigger>)>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Removes its server from the subscribers when dropped.
pub(crate) struct SignalSubscription {
    id: u64,
}

impl Drop for SignalSubscription {
    fn drop(&mut self) {
        lock(&SUBSCRIBERS).retain(|(id, _)| *id != self.id);
    }
}

fn forward() {
    let subscribers = lock(&SUBSCRIBERS);
    if subscribers.is_empty() {
        log::warn!("signal received, but no server is handling signals; ignored");
    }
    for (_, tx) in subscribers.iter() {
        let _ = tx.send(Trigger::Signal);
    }
}

pub(crate) fn subscribe(tx: Sender<Trigger>) -> Result<SignalSubscription, Error> {
    // Replaces a disposition inherited as "ignore" (a process started
    // in the background ignores SIGINT; under nohup, SIGHUP), which
    // must not keep a server from handling SIGTERM.
    let installed =
        INSTALLED.get_or_init(|| ctrlc::set_handler(forward).map_err(|e| e.to_string()));
    if let Err(e) = installed {
        return Err(Error::usage(format!(
            "cannot handle SIGINT and SIGTERM: {e}; the process set a \
             ctrlc handler of its own (start the shutdown from it with \
             a ShutdownHandle instead)"
        )));
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&SUBSCRIBERS).push((id, tx));
    Ok(SignalSubscription { id })
}
