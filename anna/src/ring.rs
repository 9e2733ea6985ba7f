//! Consistent hashing with virtual nodes.
//!
//! Two rings place every key: the global ring picks the storage nodes that
//! hold it, the local ring (one per node, the same on every node of the same
//! thread count) picks the worker threads on each. A key's replicas are the
//! first `n` distinct members clockwise from the key's hash; `n` is capped by
//! the members there are, so a replication factor above the node count
//! degrades to "every node", never to a loop.
//!
//! Hashes are computed here, not by `std`'s hasher: every process, version
//! and platform must place a key identically.

use std::collections::BTreeSet;

/// Virtual points per member: enough that 3 members each own within a few
/// percent of a third of the keys.
pub const VIRTUAL_NODES: u32 = 128;

/// FNV-1a over the bytes, finished with the SplitMix64 mixer so that
/// similar keys land far apart.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// The hash that places `key` on both rings.
pub fn key_hash(key: &str) -> u64 {
    stable_hash(key.as_bytes())
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A member of a ring: a node id or a thread index.
pub trait RingMember: Copy + Ord + std::fmt::Debug {
    /// A number that identifies the member on the ring.
    fn ring_id(self) -> u64;
}

impl RingMember for u32 {
    fn ring_id(self) -> u64 {
        u64::from(self)
    }
}

impl RingMember for crate::ids::NodeId {
    fn ring_id(self) -> u64 {
        self.0
    }
}

/// A consistent-hash ring of members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashRing<M: RingMember> {
    points: Vec<(u64, M)>,
    members: BTreeSet<M>,
}

impl<M: RingMember> Default for HashRing<M> {
    fn default() -> Self {
        HashRing {
            points: Vec::new(),
            members: BTreeSet::new(),
        }
    }
}

impl<M: RingMember> HashRing<M> {
    /// A ring of `members`, each at [`VIRTUAL_NODES`] points.
    pub fn new(members: impl IntoIterator<Item = M>) -> Self {
        let members: BTreeSet<M> = members.into_iter().collect();
        let mut points = Vec::with_capacity(members.len() * VIRTUAL_NODES as usize);
        for &m in &members {
            let base = mix(m.ring_id());
            for v in 0..VIRTUAL_NODES {
                points.push((mix(base ^ mix(u64::from(v) + 1)), m));
            }
        }
        points.sort_unstable();
        HashRing { points, members }
    }

    /// The members, in order.
    pub fn members(&self) -> &BTreeSet<M> {
        &self.members
    }

    /// How many members the ring has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the ring has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The first `n` distinct members clockwise from `hash`, into `out`
    /// (cleared first). Fewer if the ring has fewer members.
    pub fn owners_into(&self, hash: u64, n: usize, out: &mut Vec<M>) {
        out.clear();
        self.for_each_owner(hash, n, |m| out.push(m));
    }

    /// Calls `f` with each of the first `n` distinct members clockwise
    /// from `hash`, in order (what [`HashRing::owners_into`] collects);
    /// allocates nothing for replication factors up to 16.
    pub fn for_each_owner(&self, hash: u64, n: usize, mut f: impl FnMut(M)) {
        const SMALL: usize = 16;
        let want = n.min(self.members.len());
        let Some(&(_, first)) = self.points.first() else {
            return;
        };
        if want == 0 {
            return;
        }
        let mut small = [first; SMALL];
        let mut large = Vec::new();
        let seen = if want <= SMALL {
            &mut small[..]
        } else {
            large.resize(want, first);
            &mut large[..]
        };
        let mut count = 0;
        let start = self.points.partition_point(|&(p, _)| p < hash);
        for i in 0..self.points.len() {
            let (_, m) = self.points[(start + i) % self.points.len()];
            if !seen[..count].contains(&m) {
                seen[count] = m;
                count += 1;
                f(m);
                if count == want {
                    return;
                }
            }
        }
    }

    /// The first `n` distinct members clockwise from `hash`.
    pub fn owners(&self, hash: u64, n: usize) -> Vec<M> {
        let mut out = Vec::with_capacity(n);
        self.owners_into(hash, n, &mut out);
        out
    }

    /// Whether `member` is among the first `n` owners of `hash`; allocates
    /// nothing for replication factors up to 16.
    pub fn is_owner(&self, hash: u64, n: usize, member: M) -> bool {
        if !self.members.contains(&member) {
            return false;
        }
        let mut found = false;
        self.for_each_owner(hash, n, |m| found |= m == member);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    fn keys(n: usize) -> Vec<u64> {
        (0..n).map(|i| key_hash(&format!("key-{i}"))).collect()
    }

    #[test]
    fn hashes_are_stable_across_builds() {
        // Pinned: a change here moves every key of every deployed cluster.
        assert_eq!(key_hash(""), 14_087_677_454_934_409_008);
        assert_ne!(key_hash("a"), key_hash("b"));
    }

    #[test]
    fn owners_are_distinct_and_capped_by_members() {
        let ring = HashRing::new([NodeId(1), NodeId(2), NodeId(3)]);
        for h in keys(200) {
            let owners = ring.owners(h, 5);
            assert_eq!(owners.len(), 3);
            let distinct: BTreeSet<_> = owners.iter().collect();
            assert_eq!(distinct.len(), 3);
        }
        assert!(HashRing::<NodeId>::default().owners(1, 3).is_empty());
    }

    #[test]
    fn owners_are_the_first_distinct_members_clockwise() {
        let ring = HashRing::new((0..20u32).collect::<Vec<_>>());
        let len = ring.points.len();
        for h in keys(300) {
            for n in [1, 3, 16, 17, 20, 25] {
                let start = ring.points.partition_point(|&(p, _)| p < h);
                let mut walked = Vec::new();
                for i in 0..len {
                    let m = ring.points[(start + i) % len].1;
                    if !walked.contains(&m) && walked.len() < n {
                        walked.push(m);
                    }
                }
                assert_eq!(ring.owners(h, n), walked, "h={h} n={n}");
            }
        }
    }

    #[test]
    fn is_owner_agrees_with_owners() {
        let ring = HashRing::new((0..20u32).collect::<Vec<_>>());
        for h in keys(300) {
            for n in [1, 2, 3, 19, 20, 25] {
                let owners = ring.owners(h, n);
                for m in 0..21u32 {
                    assert_eq!(
                        ring.is_owner(h, n, m),
                        owners.contains(&m),
                        "h={h} n={n} m={m}"
                    );
                }
            }
        }
    }

    #[test]
    fn load_is_balanced_within_a_fifth() {
        let ring = HashRing::new([NodeId(10), NodeId(20), NodeId(30), NodeId(40)]);
        let mut counts = std::collections::BTreeMap::new();
        let ks = keys(40_000);
        for &h in &ks {
            *counts.entry(ring.owners(h, 1)[0]).or_insert(0usize) += 1;
        }
        let fair = ks.len() / 4;
        for (&node, &c) in &counts {
            assert!(
                c.abs_diff(fair) < fair / 5,
                "{node:?} owns {c} of {}",
                ks.len()
            );
        }
    }

    #[test]
    fn a_join_moves_about_its_share_of_keys_and_only_to_the_new_node() {
        let before = HashRing::new([NodeId(1), NodeId(2), NodeId(3)]);
        let after = HashRing::new([NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
        let ks = keys(20_000);
        let mut moved = 0usize;
        for &h in &ks {
            let (old, new) = (before.owners(h, 1)[0], after.owners(h, 1)[0]);
            if old != new {
                assert_eq!(new, NodeId(4));
                moved += 1;
            }
        }
        let share = ks.len() / 4;
        assert!(moved.abs_diff(share) < share / 4, "{moved} keys moved");
    }
}
