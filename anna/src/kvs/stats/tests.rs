//! The Misra–Gries guarantee, bounded memory and epoch rotation.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

const SECOND: u64 = 1_000_000;

fn stats() -> WorkerStats {
    WorkerStats::new(Duration::from_secs(1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Keys drawn from a mix of a skewed alphabet (each of `k20`..`k32`
    /// half as likely as the one before) and 200 rarer keys, through
    /// summaries of 1 to 16 counters.
    #[test]
    fn counts_are_lower_bounds_within_n_over_k_plus_1_and_heavy_keys_are_kept(
        capacity in 1usize..16,
        draws in prop::collection::vec(0u32..(1 << 12), 0..2000),
    ) {
        let mut summary = HeavyHitters::new(capacity);
        let mut truth: HashMap<String, u32> = HashMap::new();
        for d in &draws {
            let key = if d % 3 == 0 {
                format!("r{}", d % 200)
            } else {
                format!("k{}", d.leading_zeros())
            };
            summary.record(&key);
            *truth.entry(key).or_default() += 1;
            prop_assert!(summary.len() <= capacity);
        }
        let slack = draws.len() as u32 / (capacity as u32 + 1);
        for (key, &n) in &truth {
            let counted = summary.count(key);
            prop_assert!(counted <= n, "{key}: {counted} > true {n}");
            prop_assert!(counted + slack >= n, "{key}: {counted} + {slack} < true {n}");
            if n > slack {
                prop_assert!(counted > 0, "{key} ({n} of {}) was dropped", draws.len());
            }
        }
    }
}

#[test]
fn a_key_over_n_over_k_plus_1_survives_a_flood_of_distinct_keys() {
    let mut s = stats();
    let k = SUMMARY_COUNTERS as u64;
    // 100 000 accesses: the hot key takes just over N / (k + 1) of them,
    // every other access is a key never seen before.
    let n = 100_000u64;
    let hot = n / (k + 1) + 1;
    let every = n / hot;
    for i in 0..n {
        if i % every == 0 {
            s.record_access(Time(0), "hot");
        } else {
            s.record_access(Time(0), &format!("cold-{i}"));
        }
        assert!(s.tracked_keys() <= SUMMARY_COUNTERS);
    }
    s.advance(Time(SECOND));
    let last = s.last_epoch();
    assert_eq!(last.accesses, n);
    assert_eq!(last.hot_keys[0].0, "hot");
    assert!(last.hot_keys.len() <= HOT_KEYS);
}

#[test]
fn the_top_keys_are_reported_hottest_first_and_bounded() {
    let mut s = stats();
    for i in 0..300u32 {
        for _ in 0..=i {
            s.record_access(Time(0), &format!("k{i}"));
        }
    }
    s.advance(Time(SECOND));
    let hot = s.hot_keys();
    assert_eq!(hot.len(), HOT_KEYS);
    assert_eq!(hot[0], ("k299".to_string(), 300));
    assert_eq!(hot[HOT_KEYS - 1], ("k200".to_string(), 201));
    assert!(hot.windows(2).all(|w| w[0].1 >= w[1].1));
}

#[test]
fn an_epoch_is_reported_once_complete_and_forgotten_after_a_quiet_one() {
    let mut s = stats();
    s.advance(Time(0));
    s.record_access(Time(10), "a");
    s.record_access(Time(SECOND / 2), "a");
    s.record_access(Time(SECOND - 1), "b");
    assert_eq!(s.last_epoch(), &EpochStats::default(), "not complete yet");

    s.record_access(Time(SECOND + 5), "c");
    assert_eq!(s.last_epoch().accesses, 3);
    assert_eq!(
        s.hot_keys(),
        [("a".to_string(), 2), ("b".to_string(), 1)].as_slice()
    );
    assert_eq!(s.tracked_keys(), 1, "the new epoch holds only `c`");

    // `c` fell in [1 s, 2 s); at 3.5 s the last complete epoch is
    // [2 s, 3 s), which was quiet.
    s.advance(Time(3 * SECOND + SECOND / 2));
    assert_eq!(s.last_epoch().accesses, 0);
    assert!(s.hot_keys().is_empty());
    assert_eq!(s.tracked_keys(), 0, "the stale `c` is dropped");
}

#[test]
fn epochs_stay_on_their_grid_when_closed_late() {
    let mut s = stats();
    s.advance(Time(0));
    s.record_access(Time(SECOND + SECOND / 2), "x");
    s.record_access(Time(2 * SECOND - 1), "x");
    s.advance(Time(2 * SECOND));
    assert_eq!(s.last_epoch().accesses, 2);
}

#[test]
fn busy_time_becomes_thousandths_of_the_epoch_and_is_capped() {
    let mut s = stats();
    s.advance(Time(0));
    s.transport.busy_us = 250_000;
    s.advance(Time(SECOND));
    assert_eq!(s.last_epoch().busy_permille, 250);

    s.transport.busy_us += 5 * SECOND;
    s.advance(Time(2 * SECOND));
    assert_eq!(s.last_epoch().busy_permille, 1000);

    s.advance(Time(3 * SECOND));
    assert_eq!(s.last_epoch().busy_permille, 0, "no busy time added");
}

#[test]
fn permille_handles_empty_and_huge_figures() {
    assert_eq!(permille(5, 0), 0);
    assert_eq!(permille(u64::MAX, 1), 1000);
    assert_eq!(permille(1, 3), 333);
}

#[test]
fn busy_us_is_one_of_the_named_counters() {
    let mut s = stats();
    s.transport.busy_us = 42;
    let counters = s.counters(0, 0, Default::default());
    assert!(
        counters.contains(&("busy_us".to_string(), 42)),
        "{counters:?}"
    );
}
