//! [`MemoryKvs`]: a key-value store in one process's memory, merging
//! values exactly as a storage node does (the same [`KeyState`]: lattice
//! merges, type mismatches, delete tombstones and counters' baselines).
//! Behind [`crate::Store`] it is the local test mode's store
//! (`squall.testing.local()`): every conversion and error a client of a
//! cluster sees, with no cluster.

use crate::errors::KvsFailure;
use crate::store::Kvs;
use anna::client::ClientError;
use anna::lattice::{KeyState, LatticeValue, Timestamp};
use anna::protocol::Ack;
use std::collections::BTreeMap;

/// Keys and their states, in memory.
#[derive(Debug, Default)]
pub struct MemoryKvs {
    keys: BTreeMap<String, KeyState>,
}

impl MemoryKvs {
    /// The keys holding a value, in order, those starting with `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, s)| s.visible().is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl Kvs for MemoryKvs {
    fn get(
        &mut self,
        key: &str,
        _at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
        Ok(self
            .keys
            .get(key)
            .and_then(|s| s.visible().map(|v| v.into_owned())))
    }

    fn put(&mut self, key: &str, value: LatticeValue, _ack: Option<Ack>) -> Result<(), KvsFailure> {
        let state = self.keys.entry(key.to_string()).or_default();
        state.put(value).map(|_| ()).map_err(|mismatch| {
            KvsFailure(ClientError::TypeMismatch {
                key: key.to_string(),
                mismatch,
            })
        })
    }

    fn delete(&mut self, key: &str, at: Timestamp, _ack: Option<Ack>) -> Result<(), KvsFailure> {
        self.keys.entry(key.to_string()).or_default().delete(at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anna::lattice::{Counter, Lww, WriterId};

    fn at(ms: u64) -> Timestamp {
        Timestamp {
            wall_ms: ms,
            logical: 0,
            writer: WriterId(1),
        }
    }

    #[test]
    fn merges_refuses_another_type_and_deletes_as_a_node_does() {
        let mut kvs = MemoryKvs::default();
        let lww = |ms, v: &[u8]| LatticeValue::Lww(Lww::new(at(ms), v.to_vec()));
        kvs.put("k", lww(2, b"new"), None).unwrap();
        kvs.put("k", lww(1, b"old"), None).unwrap();
        assert_eq!(kvs.get("k", None).unwrap(), Some(lww(2, b"new")));
        let mut c = Counter::default();
        c.increment(WriterId(1), 3);
        let refused = kvs.put("k", LatticeValue::Counter(c), None);
        assert!(matches!(
            refused,
            Err(KvsFailure(ClientError::TypeMismatch { .. }))
        ));
        assert_eq!(kvs.keys("k"), vec!["k".to_string()]);
        kvs.delete("k", at(3), None).unwrap();
        assert_eq!(kvs.get("k", None).unwrap(), None);
        assert!(kvs.keys("").is_empty());
        kvs.put("k", lww(4, b"again"), None).unwrap();
        assert_eq!(kvs.get("k", None).unwrap(), Some(lww(4, b"again")));
    }
}
