//! [`Session`]: what a client has written, carried by its calls so that
//! every read a call makes is at least at those versions.
//!
//! A client records, for each key it wrote (values, deletes, function code,
//! DAG records), the *witness* of the write once acknowledged
//! ([`crate::lattice::KeyState::witness`]: the written state with
//! last-writer-wins payloads emptied). Its `get` of such a key, and every
//! read a call it sends makes (a `Reference` argument, `squall.user.get`,
//! the function's code, the DAG record), is answered only from a state that
//! covers the witness: read-your-writes through functions, with no time
//! window. [`SessionLog`] keeps the most recent [`SESSION_KEYS`] keys.

use super::Key;
use crate::lattice::{KeyState, Lattice, LatticeValue, VectorClock};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Most keys a session remembers; beyond, the key written longest ago is
/// forgotten (its write has long reached every replica, unless one is
/// partitioned away).
pub const SESSION_KEYS: usize = 1024;

/// A session's versions as they travel with a call: `(key, witness)`,
/// sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Session(Vec<(Key, KeyState)>);

impl Session {
    /// A session of `entries` (sorted here).
    pub fn new(mut entries: Vec<(Key, KeyState)>) -> Self {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        Session(entries)
    }

    /// The version a read of `key` must see, if the session wrote it.
    pub fn get(&self, key: &str) -> Option<&KeyState> {
        let i = self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn entries(&self) -> &[(Key, KeyState)] {
        &self.0
    }

    /// Records that `key` is at least at `witness` (joined with what is
    /// recorded of it).
    pub fn record(&mut self, key: &str, witness: KeyState) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            Ok(i) => {
                self.0[i].1.merge(witness);
            }
            Err(i) => self.0.insert(i, (key.to_string(), witness)),
        }
    }

    /// Records `state` for `key` unless the key has one already (a pin:
    /// the first read of a key wins).
    pub fn pin(&mut self, key: &str, state: KeyState) {
        if let Err(i) = self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            self.0.insert(i, (key.to_string(), state));
        }
    }

    /// Pins `state` for `key`, replacing a pin it had (a later read that
    /// had to be newer than the pin).
    pub fn repin(&mut self, key: &str, state: KeyState) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            Ok(i) => self.0[i].1 = state,
            Err(i) => self.0.insert(i, (key.to_string(), state)),
        }
    }

    /// Pins every entry of `other` (see [`Session::pin`]).
    pub fn pin_all(&mut self, other: &Session) {
        for (key, state) in &other.0 {
            self.pin(key, state.clone());
        }
    }

    /// The vector clock of every causal value among these states (pins):
    /// what a causal write made after reading them depends on.
    pub fn causal_clocks(&self) -> Vec<(Key, VectorClock)> {
        (self.0.iter())
            .filter_map(|(k, s)| match s.visible()?.as_ref() {
                LatticeValue::MultiKeyCausal(c) => Some((k.clone(), c.vector_clock())),
                LatticeValue::SingleKeyCausal(c) => Some((k.clone(), c.vector_clock())),
                _ => None,
            })
            .collect()
    }

    /// Joins every version of `other` into this session.
    pub fn join(&mut self, other: &Session) {
        for (key, witness) in &other.0 {
            self.record(key, witness.clone());
        }
    }
}

/// A client's record of its acknowledged writes, bounded by
/// [`SESSION_KEYS`].
#[derive(Clone, Debug, Default)]
pub struct SessionLog {
    witnesses: HashMap<Key, (KeyState, u64)>,
    /// The keys in the order of their writes, each with the write's
    /// number; an entry whose number is no longer its key's is stale and
    /// skipped. The oldest key is found here, not by a scan of every key.
    order: VecDeque<(Key, u64)>,
    next: u64,
    /// The snapshot calls carry, rebuilt after a write.
    snapshot: Option<Session>,
}

impl SessionLog {
    /// Records an acknowledged write of `key` that produced at least
    /// `state` (merged with what was recorded of the key before).
    pub fn record(&mut self, key: &str, state: &KeyState) {
        self.next += 1;
        self.snapshot = None;
        let witness = state.witness();
        match self.witnesses.get_mut(key) {
            Some((w, at)) => {
                w.merge(witness);
                *at = self.next;
            }
            None => {
                if self.witnesses.len() >= SESSION_KEYS {
                    self.forget_oldest();
                }
                self.witnesses.insert(key.to_string(), (witness, self.next));
            }
        }
        self.order.push_back((key.to_string(), self.next));
        if self.order.len() > 2 * SESSION_KEYS {
            // Rewrites of the same keys leave stale entries: drop them.
            let witnesses = &self.witnesses;
            (self.order).retain(|(k, n)| witnesses.get(k).is_some_and(|(_, at)| at == n));
        }
    }

    /// Forgets the key written longest ago.
    fn forget_oldest(&mut self) {
        while let Some((key, n)) = self.order.pop_front() {
            if self.witnesses.get(&key).is_some_and(|(_, at)| *at == n) {
                self.witnesses.remove(&key);
                return;
            }
        }
    }

    /// The version recorded for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&KeyState> {
        self.witnesses.get(key).map(|(w, _)| w)
    }

    /// Every recorded version, as a call carries them.
    pub fn snapshot(&mut self) -> Session {
        self.snapshot
            .get_or_insert_with(|| {
                Session::new(
                    (self.witnesses.iter())
                        .map(|(k, (w, _))| (k.clone(), w.clone()))
                        .collect(),
                )
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{LatticeValue, Lww, Timestamp, WriterId};

    fn write(ms: u64) -> KeyState {
        let ts = Timestamp {
            wall_ms: ms,
            logical: 0,
            writer: WriterId(1),
        };
        KeyState::from_value(LatticeValue::Lww(Lww::new(ts, b"payload".to_vec())))
    }

    #[test]
    fn the_first_pin_of_a_key_wins_and_records_join() {
        let mut pins = Session::default();
        pins.pin("k", write(2));
        pins.pin("k", write(3));
        assert_eq!(pins.get("k"), Some(&write(2)));
        let mut later = Session::default();
        later.pin("k", write(1));
        later.pin("j", write(1));
        pins.pin_all(&later);
        assert_eq!((pins.len(), pins.get("k")), (2, Some(&write(2))));
        let mut versions = Session::default();
        versions.record("k", write(2));
        versions.record("k", write(1));
        assert_eq!(versions.get("k"), Some(&write(2)));
    }

    #[test]
    fn a_log_keeps_witnesses_merged_and_bounded() {
        let mut log = SessionLog::default();
        log.record("a", &write(1));
        log.record("a", &write(3));
        log.record("a", &write(2));
        let w = log.get("a").unwrap();
        assert!(write(3).covers(w) && !write(2).covers(w));
        assert_eq!(
            w.approx_bytes(),
            KeyState::from_value(LatticeValue::default()).approx_bytes()
        );
        for i in 0..SESSION_KEYS + 5 {
            log.record(&format!("k{i}"), &write(1));
        }
        let session = log.snapshot();
        assert_eq!(session.len(), SESSION_KEYS);
        assert!(
            session.get("a").is_none(),
            "the oldest key is forgotten first"
        );
        assert!(session.get(&format!("k{}", SESSION_KEYS + 4)).is_some());
    }

    #[test]
    fn the_key_forgotten_is_the_one_written_longest_ago_however_often_others_were() {
        let mut log = SessionLog::default();
        // Many rewrites of one key, then a full log of others.
        for _ in 0..5 * SESSION_KEYS {
            log.record("hot", &write(1));
        }
        for i in 0..SESSION_KEYS - 1 {
            log.record(&format!("k{i}"), &write(1));
        }
        assert!(log.get("hot").is_some());
        // "hot" is written again: k0 is now the oldest.
        log.record("hot", &write(2));
        log.record("new", &write(1));
        assert!(log.get("k0").is_none(), "the oldest write is forgotten");
        assert!(log.get("hot").is_some(), "a key written again is kept");
        assert!(log.get("k1").is_some() && log.get("new").is_some());
        assert_eq!(log.snapshot().len(), SESSION_KEYS);
        assert!(log.order.len() <= 2 * SESSION_KEYS);
    }
}
