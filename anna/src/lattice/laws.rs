//! The law checker: the contract every lattice type's tests call.
//!
//! [`check_laws`] takes a handful of values and asserts, for every pair and
//! triple of them, associativity, commutativity, idempotence, that bottom
//! (`Default`) is the identity, and that `merge` reports a change exactly
//! when the value changed. [`check_order_insensitive`] asserts that a batch of
//! updates merged in any order, with duplicates, gives the same value. Both
//! panic with the offending values, so a failing proptest case shrinks to a
//! readable counterexample.

use super::Lattice;

fn merged<T: Lattice>(a: &T, b: &T) -> T {
    let mut out = a.clone();
    let changed = out.merge(b.clone());
    assert_eq!(
        changed,
        out != *a,
        "merge reported changed={changed} but the value {} when merging\n  {b:?}\ninto\n  {a:?}",
        if out != *a {
            "changed"
        } else {
            "did not change"
        },
    );
    out
}

/// Asserts the lattice laws over every pair and triple drawn from `items`.
pub fn check_laws<T: Lattice>(items: &[T]) {
    let bottom = T::default();
    for a in items {
        assert_eq!(merged(a, a), *a, "not idempotent: {a:?}");
        assert_eq!(
            merged(a, &bottom),
            *a,
            "bottom is not an identity for {a:?}"
        );
        assert_eq!(merged(&bottom, a), *a, "merging {a:?} into bottom differs");
        for b in items {
            let ab = merged(a, b);
            assert_eq!(ab, merged(b, a), "not commutative:\n  {a:?}\n  {b:?}");
            assert_eq!(merged(&ab, b), ab, "merging {b:?} again changed {ab:?}");
            for c in items {
                assert_eq!(
                    merged(&ab, c),
                    merged(a, &merged(b, c)),
                    "not associative:\n  {a:?}\n  {b:?}\n  {c:?}"
                );
            }
        }
    }
}

/// Asserts that merging `updates[i]` for each `i` of `order` gives the same
/// value as merging `updates` in their own order. `order` must name every
/// index at least once; it may repeat some (duplicates) in any order.
pub fn check_order_insensitive<T: Lattice>(updates: &[T], order: &[usize]) {
    for i in 0..updates.len() {
        assert!(
            order.contains(&i),
            "order {order:?} never delivers update {i}"
        );
    }
    let in_order = updates
        .iter()
        .fold(T::default(), |acc, u| acc.join(u.clone()));
    let shuffled = order
        .iter()
        .fold(T::default(), |acc, &i| acc.join(updates[i].clone()));
    assert_eq!(
        shuffled, in_order,
        "delivery order {order:?} changed the result of merging {updates:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    /// Last arrival wins (ignoring bottom): not a lattice; the checker must
    /// say so.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Overwrite(u8);

    impl Lattice for Overwrite {
        fn merge(&mut self, other: Self) -> bool {
            if other.0 == 0 {
                return false;
            }
            let changed = self.0 != other.0;
            self.0 = other.0;
            changed
        }
    }

    #[test]
    #[should_panic(expected = "not commutative")]
    fn the_checker_rejects_last_arrival_wins() {
        check_laws(&[Overwrite(1), Overwrite(2)]);
    }

    #[test]
    #[should_panic(expected = "changed the result")]
    fn the_order_check_rejects_last_arrival_wins() {
        check_order_insensitive(&[Overwrite(1), Overwrite(2)], &[1, 0]);
    }
}
