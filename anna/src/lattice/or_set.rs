//! Observed-remove sets: a set that shrinks, where an add the remover did
//! not see survives the remove.
//!
//! # Design
//!
//! Every add is tagged with a [`Timestamp`] of its writer (a writer's
//! hybrid-logical-clock times strictly increase, so the tag is unique per
//! writer and later adds of one writer have later tags). A remove names
//! the tags it observed. An element's tags are its [`Presence`]: per
//! writer, the tag of that writer's latest add, and the latest of that
//! writer's tags any remove observed. The element is present while some
//! writer's latest add is later than the removes of it:
//!
//! ```text
//! present(e) = ∃ w: added[e][w] > removed[e][w]     (an absent removed is -∞)
//! ```
//!
//! Merge takes the per-writer maximum of both maps (a product of max
//! lattices, so associative, commutative and idempotent), then drops an
//! add its writer's remove covers (the normal form; dropping is monotone,
//! since removes only grow). So:
//!
//! - an observed remove stays removed: a replica that still holds the add
//!   takes the later remove in the merge;
//! - a concurrent add survives: its tag is later than any the remover saw,
//!   whether it came from another writer or from the same one;
//! - an older add of a writer the remover did not see (still in flight)
//!   is removed with that writer's later add the remover did see: adds of
//!   one writer are ordered, and the remove came after the one it saw.
//!
//! This is the add-wins observed-remove set with one tag per writer and
//! element instead of one per add: its size is bounded by elements ×
//! writers, however often an element is added and removed. Removes are
//! tombstones: a removed element keeps its [`Presence`] (its bytes and its
//! writers' remove tags), since dropping it needs every replica to agree it
//! was seen, which the data path does not coordinate. A causal-context
//! ("dot kernel") design would drop removed elements entirely, but needs
//! contiguous per-writer counters per key, which writers that retry (a
//! function's attempts share one writer id) cannot promise; timestamps
//! they can.
//!
//! [`ORSetLattice::removal`] builds the delta a remove sends: the element's
//! presence as this replica sees it, every add turned into a remove.

use super::{Lattice, Timestamp, WriterId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The add and remove tags of one element (or map field), per writer.
/// Bottom is no tags: absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "PresenceTags")]
pub struct Presence {
    /// Per writer, its latest add, only while later than `removed`'s.
    added: BTreeMap<WriterId, Timestamp>,
    /// Per writer, the latest of its adds a remove observed.
    removed: BTreeMap<WriterId, Timestamp>,
}

/// [`Presence`] as decoded, before its normal form is restored (a crafted
/// frame may hold adds its removes cover).
#[derive(Deserialize)]
struct PresenceTags {
    added: BTreeMap<WriterId, Timestamp>,
    removed: BTreeMap<WriterId, Timestamp>,
}

impl From<PresenceTags> for Presence {
    fn from(t: PresenceTags) -> Self {
        let mut p = Presence {
            added: t.added,
            removed: t.removed,
        };
        p.normalize();
        p
    }
}

impl Presence {
    /// The presence of one add, tagged `at` (by writer `at.writer`).
    pub fn added(at: Timestamp) -> Self {
        Presence {
            added: BTreeMap::from([(at.writer, at)]),
            removed: BTreeMap::new(),
        }
    }

    /// The remove of every add `observed` shows: its adds become removes.
    pub fn removing(observed: &Presence) -> Self {
        Presence {
            added: BTreeMap::new(),
            removed: observed.added.clone(),
        }
    }

    /// The presence of removes of the given tags (as a client observed
    /// them).
    pub fn removed(tags: impl IntoIterator<Item = Timestamp>) -> Self {
        let mut p = Presence::default();
        for t in tags {
            p.merge(Presence {
                added: BTreeMap::new(),
                removed: BTreeMap::from([(t.writer, t)]),
            });
        }
        p
    }

    /// Whether an add is live: the element (or field) is there.
    pub fn is_present(&self) -> bool {
        !self.added.is_empty()
    }

    /// The live adds: per writer, its latest add no remove observed.
    pub fn adds(&self) -> &BTreeMap<WriterId, Timestamp> {
        &self.added
    }

    /// Per writer, the latest of its adds a remove observed.
    pub fn removes(&self) -> &BTreeMap<WriterId, Timestamp> {
        &self.removed
    }

    /// How many tags this holds (for size estimates).
    pub fn tags(&self) -> usize {
        self.added.len() + self.removed.len()
    }

    /// Every tag's time, adds and removes.
    pub fn times(&self) -> impl Iterator<Item = Timestamp> + '_ {
        self.added.values().chain(self.removed.values()).copied()
    }

    /// Whether merging `other` in would change nothing.
    pub fn covers(&self, other: &Presence) -> bool {
        let removes = other
            .removed
            .iter()
            .all(|(w, r)| self.removed.get(w).is_some_and(|mine| mine >= r));
        removes
            && other.added.iter().all(|(w, a)| {
                self.added.get(w).is_some_and(|mine| mine >= a)
                    || self.removed.get(w).is_some_and(|r| r >= a)
            })
    }

    /// Drops adds their writer's remove covers.
    fn normalize(&mut self) {
        let removed = &self.removed;
        self.added
            .retain(|w, a| removed.get(w).is_none_or(|r| *a > *r));
    }
}

impl Lattice for Presence {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for (w, r) in other.removed {
            match self.removed.get_mut(&w) {
                Some(mine) if *mine >= r => {}
                Some(mine) => {
                    *mine = r;
                    changed = true;
                }
                None => {
                    self.removed.insert(w, r);
                    changed = true;
                }
            }
        }
        if changed {
            // Only a grown remove can cover an add `self` holds.
            self.normalize();
        }
        for (w, a) in other.added {
            if self.removed.get(&w).is_some_and(|r| a <= *r) {
                continue;
            }
            match self.added.get_mut(&w) {
                Some(mine) if *mine >= a => {}
                Some(mine) => {
                    *mine = a;
                    changed = true;
                }
                None => {
                    self.added.insert(w, a);
                    changed = true;
                }
            }
        }
        changed
    }
}

/// An observed-remove set (see the module docs). Bottom is the empty set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ORSetLattice<T: Ord>(BTreeMap<T, Presence>);

impl<T: Ord> Default for ORSetLattice<T> {
    fn default() -> Self {
        ORSetLattice(BTreeMap::new())
    }
}

impl<T: Ord + Clone> ORSetLattice<T> {
    /// The set of `items`, each added at `at`.
    pub fn with_adds(at: Timestamp, items: impl IntoIterator<Item = T>) -> Self {
        ORSetLattice(
            items
                .into_iter()
                .map(|i| (i, Presence::added(at)))
                .collect(),
        )
    }

    /// Adds `item`, tagged `at`; returns whether the set changed.
    pub fn add(&mut self, item: T, at: Timestamp) -> bool {
        self.merge_presence(item, Presence::added(at))
    }

    /// Merges `presence` into `item`'s; returns whether the set changed.
    pub fn merge_presence(&mut self, item: T, presence: Presence) -> bool {
        match self.0.get_mut(&item) {
            Some(mine) => mine.merge(presence),
            None => {
                self.0.insert(item, presence);
                true
            }
        }
    }

    /// The delta that removes `item` as this replica sees it (every add of
    /// it here), or `None` if it is not present here.
    pub fn removal(&self, item: &T) -> Option<ORSetLattice<T>> {
        let p = self.0.get(item).filter(|p| p.is_present())?;
        Some(ORSetLattice(BTreeMap::from([(
            item.clone(),
            Presence::removing(p),
        )])))
    }

    /// Removes `item` as this replica sees it; returns whether it was
    /// present.
    pub fn remove(&mut self, item: &T) -> bool {
        match self.0.get_mut(item).filter(|p| p.is_present()) {
            Some(p) => p.merge(Presence::removing(p)),
            None => false,
        }
    }
}

impl<T: Ord> ORSetLattice<T> {
    /// Whether `item` is present.
    pub fn contains(&self, item: &T) -> bool {
        self.0.get(item).is_some_and(Presence::is_present)
    }

    /// The present elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &T> + '_ {
        self.0
            .iter()
            .filter(|(_, p)| p.is_present())
            .map(|(i, _)| i)
    }

    /// How many elements are present.
    pub fn len(&self) -> usize {
        self.elements().count()
    }

    /// Whether no element is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element with its tags, removed ones (tombstones) included.
    pub fn entries(&self) -> &BTreeMap<T, Presence> {
        &self.0
    }
}

impl<T: Clone + Ord + std::fmt::Debug> Lattice for ORSetLattice<T> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for (item, presence) in other.0 {
            changed |= self.merge_presence(item, presence);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::check_laws;

    fn at(ms: u64, writer: u64) -> Timestamp {
        Timestamp {
            wall_ms: ms,
            logical: 0,
            writer: WriterId(writer),
        }
    }

    #[test]
    fn a_remove_removes_what_it_saw_and_a_concurrent_add_survives() {
        let mut a = ORSetLattice::with_adds(at(1, 1), ["x", "y"]);
        let mut b = a.clone();
        // Replica a removes x; replica b, concurrently, adds x again.
        assert!(a.remove(&"x"));
        assert!(!a.contains(&"x"));
        assert!(b.add("x", at(2, 2)));
        let merged = a.clone().join(b.clone());
        assert!(merged.contains(&"x"), "the concurrent add survives");
        assert_eq!(merged, b.join(a));
        // A remove of what is there now removes it everywhere.
        let mut c = merged.clone();
        assert!(c.remove(&"x"));
        assert!(!merged.join(c).contains(&"x"));
    }

    #[test]
    fn a_later_add_by_the_same_writer_survives_an_earlier_observed_remove() {
        let mut s = ORSetLattice::with_adds(at(1, 1), ["x"]);
        let remove = s.removal(&"x").unwrap();
        s.add("x", at(2, 1));
        s.merge(remove);
        assert!(s.contains(&"x"), "the remove saw only the first add");
    }

    #[test]
    fn a_removed_element_stays_removed_whatever_arrives_late() {
        let added = ORSetLattice::with_adds(at(1, 1), ["x"]);
        let mut s = added.clone();
        s.remove(&"x");
        assert!(!s.merge(added.clone()));
        assert!(!s.contains(&"x"));
        assert!(!added.join(s).contains(&"x"));
    }

    #[test]
    fn adding_and_removing_again_keeps_one_tag_per_writer() {
        let mut s = ORSetLattice::default();
        for i in 0..100 {
            s.add("x", at(i * 2, 1));
            s.remove(&"x");
        }
        assert_eq!(s.entries()[&"x"].tags(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn decoding_restores_the_normal_form() {
        let crafted = PresenceTags {
            added: BTreeMap::from([(WriterId(1), at(1, 1))]),
            removed: BTreeMap::from([(WriterId(1), at(2, 1))]),
        };
        let p = Presence::from(crafted);
        assert!(!p.is_present());
        assert_eq!(p, Presence::removed([at(2, 1)]));
    }

    #[test]
    fn or_sets_obey_the_laws() {
        let mut removed = ORSetLattice::with_adds(at(1, 1), ["x"]);
        removed.remove(&"x");
        let items = [
            ORSetLattice::default(),
            ORSetLattice::with_adds(at(1, 1), ["x"]),
            ORSetLattice::with_adds(at(2, 1), ["x", "y"]),
            ORSetLattice::with_adds(at(1, 2), ["x"]),
            removed,
            ORSetLattice(BTreeMap::from([("y", Presence::removed([at(2, 1)]))])),
        ];
        check_laws(&items);
    }
}
