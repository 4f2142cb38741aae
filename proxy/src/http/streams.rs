//! The HTTP+SSE streams this instance holds open, so that a stream token
//! ([`super::affinity::StreamToken`]) pins only while its stream lives. Each stream gets a
//! serial when its `endpoint` event is rewritten and keeps it registered until the stream's
//! request ends (the [`LiveStream`] guard drops). The instance id tells this instance's
//! tokens from those of other instances (and of earlier runs), whose streams it cannot see.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::affinity::{Liveness, StreamToken};

/// Open streams of this instance.
pub(crate) struct LiveStreams {
    instance: u64,
    next: AtomicU64,
    live: Mutex<HashSet<u64>>,
}

/// One open stream; unregisters on drop.
pub(crate) struct LiveStream {
    table: Arc<LiveStreams>,
    serial: u64,
}

impl LiveStreams {
    /// An empty table with a new instance id (random: unique, not secret; tokens are
    /// signed).
    pub(crate) fn new() -> Arc<Self> {
        // From the OS's generator, so two instances started at the same moment differ.
        let instance = getrandom::u64()
            .unwrap_or_else(|_| fastrand::u64(..) ^ u64::from(std::process::id()).rotate_left(32));
        Arc::new(Self {
            instance,
            next: AtomicU64::new(1),
            live: Mutex::new(HashSet::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This instance's id, signed into its tokens.
    pub(crate) fn instance(&self) -> u64 {
        self.instance
    }

    /// Registers a new open stream.
    pub(crate) fn open(self: &Arc<Self>) -> LiveStream {
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(serial);
        LiveStream {
            table: self.clone(),
            serial,
        }
    }

    /// Whether `token`'s stream is open here, ended here, or not this instance's.
    pub(crate) fn liveness(&self, token: &StreamToken) -> Liveness {
        if token.instance != self.instance {
            Liveness::Elsewhere
        } else if self.lock().contains(&token.stream) {
            Liveness::Live
        } else {
            Liveness::Ended
        }
    }
}

impl LiveStream {
    /// The stream's serial.
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.table.lock().remove(&self.serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_live_until_its_guard_drops() {
        let table = LiveStreams::new();
        let stream = table.open();
        let token = |instance, stream| StreamToken {
            site: "a".into(),
            instance,
            stream,
            target: "/m".into(),
        };
        let mine = token(table.instance(), stream.serial());
        assert_eq!(table.liveness(&mine), Liveness::Live);
        assert_ne!(table.open().serial(), stream.serial());
        assert_eq!(
            table.liveness(&token(table.instance() ^ 1, stream.serial())),
            Liveness::Elsewhere
        );
        drop(stream);
        assert_eq!(table.liveness(&mine), Liveness::Ended);
    }
}
