//! A deadline that ends the process unless it is disarmed in time: the backstop for a storage
//! engine that never returns once a write has failed. sled, after an IO error such as a full
//! disk, may wait forever in a flush, including the flush it runs when its last handle is
//! dropped; the thread left waiting keeps the store's lock, so the store can be neither closed
//! nor reopened in this process. Exiting with status 4 hands the restart to the supervisor, as
//! `store.flush_timeout` does: nothing unflushed was acknowledged, so a restart loses nothing.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Exit status meaning "the store is stuck; restart me" (also `ingest::flusher`'s).
pub const EXIT_STORE_STUCK: i32 = 4;

/// Disarmed when dropped.
#[derive(Default)]
pub(crate) struct Watchdog {
    disarmed: Arc<(Mutex<bool>, Condvar)>,
}

impl Watchdog {
    /// Ends the process `after` from now unless `self` is dropped first; `what` is logged.
    pub(crate) fn arm(&self, after: Duration, what: &'static str) {
        let disarmed = self.disarmed.clone();
        let spawned = std::thread::Builder::new().name("herald-watchdog".into()).spawn(move || {
            let (flag, cv) = &*disarmed;
            let Ok(guard) = flag.lock() else { return };
            let Ok((guard, _)) = cv.wait_timeout_while(guard, after, |disarmed| !*disarmed) else { return };
            if !*guard {
                tracing::error!(after_s = after.as_secs(), what, "exiting for a restart");
                eprintln!("herald: {what} within {} s; exiting (status {EXIT_STORE_STUCK}) for a restart", after.as_secs());
                std::process::exit(EXIT_STORE_STUCK);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the watchdog thread");
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (flag, cv) = &*self.disarmed;
        if let Ok(mut disarmed) = flag.lock() {
            *disarmed = true;
        }
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_watchdog_never_fires() {
        let w = Watchdog::default();
        w.arm(Duration::from_millis(50), "test");
        drop(w);
        std::thread::sleep(Duration::from_millis(150)); // the process is still here
    }
}
