//! The session stores of a demo site: Streamable HTTP sessions (bounded,
//! oldest evicted first) and open HTTP+SSE streams by session id.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tokio::sync::mpsc;

/// Maximum number of live sessions per site; the oldest is evicted beyond it.
pub(crate) const MAX_SESSIONS: usize = 10_000;
/// Maximum number of open SSE streams per site; more are refused with 503.
pub(crate) const MAX_SSE_SESSIONS: usize = 10_000;

/// Sessions in creation order, bounded to [`MAX_SESSIONS`].
#[derive(Default)]
pub(crate) struct Sessions {
    next_seq: u64,
    by_id: HashMap<String, u64>,
    by_age: BTreeMap<u64, String>,
}

impl Sessions {
    /// Records a new session, evicting the oldest ones if the map is full.
    pub(crate) fn insert(&mut self, id: String) {
        while self.by_id.len() >= MAX_SESSIONS {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if let Some(previous) = self.by_id.insert(id.clone(), seq) {
            self.by_age.remove(&previous);
        }
        self.by_age.insert(seq, id);
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Forgets a session; returns whether it existed.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(seq) => {
                self.by_age.remove(&seq);
                true
            }
            None => false,
        }
    }
}

/// Open SSE streams: where to deliver the responses of each session.
#[derive(Default)]
pub(crate) struct SseSessions {
    /// The sending side of each open stream, by session id.
    pub(crate) by_id: HashMap<String, mpsc::Sender<Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded() {
        let mut sessions = Sessions::default();
        for i in 0..(MAX_SESSIONS + 5) {
            sessions.insert(format!("s{i}"));
        }
        assert_eq!(sessions.by_id.len(), MAX_SESSIONS);
        assert_eq!(sessions.by_age.len(), MAX_SESSIONS);
        assert!(!sessions.contains("s0"));
        assert!(!sessions.contains("s4"));
        assert!(sessions.contains("s5"));
        assert!(sessions.remove("s5"));
        assert!(!sessions.remove("s5"));
    }
}
