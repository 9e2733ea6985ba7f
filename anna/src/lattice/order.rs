//! Max and min of a totally ordered type.
//!
//! Bottom is "nothing seen yet" (`None`), so `Min` has a bottom without
//! inventing a largest value of `T`.

use super::Lattice;
use serde::{Deserialize, Serialize};

/// The greatest value seen.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Max<T>(Option<T>);

/// The least value seen.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Min<T>(Option<T>);

macro_rules! extremum {
    ($name:ident, $keep_other:expr) => {
        impl<T> Default for $name<T> {
            fn default() -> Self {
                $name(None)
            }
        }

        impl<T> $name<T> {
            /// The lattice holding `value`.
            pub fn new(value: T) -> Self {
                $name(Some(value))
            }

            /// The value, or `None` at bottom.
            pub fn reveal(&self) -> Option<&T> {
                self.0.as_ref()
            }

            /// The value, by value.
            pub fn into_reveal(self) -> Option<T> {
                self.0
            }
        }

        impl<T: Clone + Ord + std::fmt::Debug> Lattice for $name<T> {
            fn merge(&mut self, other: Self) -> bool {
                let keep_other: fn(&T, &T) -> bool = $keep_other;
                match (&self.0, other.0) {
                    (_, None) => false,
                    (None, Some(o)) => {
                        self.0 = Some(o);
                        true
                    }
                    (Some(s), Some(o)) => {
                        let grow = keep_other(s, &o);
                        if grow {
                            self.0 = Some(o);
                        }
                        grow
                    }
                }
            }
        }
    };
}

extremum!(Max, |mine, theirs| theirs > mine);
extremum!(Min, |mine, theirs| theirs < mine);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_keeps_the_greatest_and_min_the_least() {
        let mut hi = Max::new(3);
        assert!(hi.merge(Max::new(7)));
        assert!(!hi.merge(Max::new(5)));
        assert_eq!(hi.reveal(), Some(&7));
        let mut lo = Min::new(3);
        assert!(!lo.merge(Min::new(7)));
        assert!(lo.merge(Min::new(-1)));
        assert_eq!(lo.reveal(), Some(&-1));
    }

    #[test]
    fn bottom_changes_nothing_and_is_replaced_by_anything() {
        let mut m = Min::<i64>::default();
        assert!(!m.merge(Min::default()));
        assert!(m.merge(Min::new(i64::MAX)));
    }
}
