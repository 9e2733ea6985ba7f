//! What removing means, on random observed-remove sets and maps.
//!
//! `lattice_laws.rs` checks that they are lattices; this file checks the
//! promise of their module docs (`anna::lattice::or_set`), whatever the
//! replicas held and whatever order the merges come in:
//!
//! - `an_observed_remove_stays_removed_*`: an element (field) removed as a
//!   replica saw it stays removed when the states it saw arrive again, in
//!   any order, duplicated;
//! - `a_concurrent_add_survives_*`: an add (update) with a tag the remover
//!   did not see keeps the element (field), whichever arrives first;
//! - `merge_never_brings_back_what_a_later_remove_saw`: merge is
//!   monotone in removes: merging more states into a removed element
//!   brings it back only through an add none of the removes saw.

mod strategies;

use anna::lattice::{Lattice, ORMapLattice, ORSetLattice, Timestamp, WriterId};
use proptest::collection::vec;
use proptest::prelude::*;
use strategies::*;

const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// Later than every tag the strategies make (their times are 0..3).
fn later(writer: u64) -> Timestamp {
    Timestamp {
        wall_ms: 100,
        logical: 0,
        writer: WriterId(writer),
    }
}

/// One of the strategies' element names, as bytes.
fn element() -> impl Strategy<Value = Vec<u8>> {
    field_name().prop_map(String::into_bytes)
}

/// The join of `states` delivered in `order`.
fn delivered<T: Lattice>(start: T, states: &[T], order: &[usize]) -> T {
    order
        .iter()
        .fold(start, |acc, &i| acc.join(states[i].clone()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_observed_remove_stays_removed_in_sets(
        (replicas, order) in updates_and_order(or_set(), 4),
        e in element(),
    ) {
        let seen = replicas.iter().cloned().fold(ORSetLattice::default(), Lattice::join);
        let Some(removal) = seen.removal(&e) else { return Ok(()) };
        // The remove alone, then every state it saw, in any order.
        let after = delivered(removal.clone(), &replicas, &order);
        prop_assert!(!after.contains(&e), "{:?} came back in {:?}", e, after);
        // And at the replica that removed it.
        let at_remover = delivered(seen.join(removal), &replicas, &order);
        prop_assert!(!at_remover.contains(&e));
    }

    #[test]
    fn a_concurrent_add_survives_the_remove_in_sets(
        replicas in vec(or_set(), 1..=3),
        e in element(),
        writer in 0u64..5,
        add_first in any::<bool>(),
    ) {
        let seen = replicas.iter().cloned().fold(ORSetLattice::default(), Lattice::join);
        let removal = seen.removal(&e).unwrap_or_default();
        let add = ORSetLattice::with_adds(later(writer), [e.clone()]);
        let merged = if add_first {
            add.join(seen).join(removal)
        } else {
            seen.join(removal).join(add)
        };
        prop_assert!(merged.contains(&e));
    }

    #[test]
    fn merge_never_brings_back_what_a_later_remove_saw(
        (replicas, order) in updates_and_order(or_set(), 4),
        e in element(),
        writer in 0u64..5,
    ) {
        let seen = replicas.iter().cloned().fold(ORSetLattice::default(), Lattice::join);
        let Some(removal) = seen.removal(&e) else { return Ok(()) };
        let mut state = seen.join(removal);
        for &i in &order {
            state.merge(replicas[i].clone());
            prop_assert!(!state.contains(&e));
        }
        // Only an add the remove did not see brings it back.
        state.merge(ORSetLattice::with_adds(later(writer), [e.clone()]));
        prop_assert!(state.contains(&e));
    }

    #[test]
    fn an_observed_remove_stays_removed_in_maps(
        (replicas, order) in updates_and_order(or_max_map(), 4),
        field in field_name(),
    ) {
        let seen = replicas.iter().cloned().fold(ORMapLattice::default(), Lattice::join);
        let Some(removal) = seen.removal(&field) else { return Ok(()) };
        let after = delivered(removal.clone(), &replicas, &order);
        prop_assert_eq!(after.get(&field), None);
        let at_remover = delivered(seen.join(removal), &replicas, &order);
        prop_assert_eq!(at_remover.get(&field), None);
        // The other fields are untouched.
        let all = replicas.iter().cloned().fold(ORMapLattice::default(), Lattice::join);
        for (k, v) in all.fields().filter(|(k, _)| **k != field) {
            prop_assert_eq!(at_remover.get(k), Some(v));
        }
    }

    #[test]
    fn a_concurrent_update_survives_the_remove_in_maps(
        replicas in vec(or_max_map(), 1..=3),
        field in field_name(),
        writer in 0u64..5,
        value in max(),
    ) {
        let seen = replicas.iter().cloned().fold(ORMapLattice::default(), Lattice::join);
        let removal = seen.removal(&field).unwrap_or_default();
        let mut update = ORMapLattice::default();
        update.update(field.clone(), later(writer), value.clone());
        let merged = seen.clone().join(removal.clone()).join(update.clone());
        prop_assert_eq!(&merged, &update.join(removal).join(seen));
        // The field is there, holding at least the update's value.
        prop_assert!(merged.get(&field).is_some_and(|v| v.clone().join(value) == *v));
    }
}
