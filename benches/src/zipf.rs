//! Which key a request touches: uniform, or Zipf-skewed.
//!
//! Under Zipf with exponent `s` the key of rank `k` (1-based) is drawn with
//! probability `k^-s / H(n, s)`, where `H(n, s) = Σ_{i=1..n} i^-s`. With
//! `s = 0.99` over 100k keys the hottest key takes ~8% of requests and the
//! top 1% of keys about half: the skew YCSB and the Anna paper use. The
//! cumulative distribution is computed once (100k `f64`s, ~1 ms) and shared
//! by every client thread; a draw is one uniform number and a binary search.
//! Rank `k` is key index `k - 1`, so key 0 is the hottest.

use rand::Rng;

/// Draws key indices in `0..keys`.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    keys: usize,
    /// Normalised cumulative probabilities, one per rank; `None` when
    /// uniform (`s = 0`), which needs no table.
    cdf: Option<Vec<f64>>,
}

/// Why a key distribution cannot be built.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ZipfError {
    #[error("the key space must hold at least one key")]
    NoKeys,
    #[error("the Zipf exponent must be finite and at least 0, not {0}")]
    BadExponent(f64),
}

impl KeyChooser {
    /// Keys `0..keys`, drawn with Zipf exponent `s` (0 means uniform).
    pub fn new(keys: usize, s: f64) -> Result<Self, ZipfError> {
        if keys == 0 {
            return Err(ZipfError::NoKeys);
        }
        if !s.is_finite() || s < 0.0 {
            return Err(ZipfError::BadExponent(s));
        }
        if s == 0.0 {
            return Ok(KeyChooser { keys, cdf: None });
        }
        let mut cdf = Vec::with_capacity(keys);
        let mut sum = 0.0;
        for rank in 1..=keys {
            sum += (rank as f64).powf(-s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Ok(KeyChooser {
            keys,
            cdf: Some(cdf),
        })
    }

    /// How many keys there are.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// The probability that [`KeyChooser::sample`] returns `index`.
    pub fn probability(&self, index: usize) -> f64 {
        match &self.cdf {
            _ if index >= self.keys => 0.0,
            None => 1.0 / self.keys as f64,
            Some(cdf) if index == 0 => cdf[0],
            Some(cdf) => cdf[index] - cdf[index - 1],
        }
    }

    /// Draws one key index.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        match &self.cdf {
            None => rng.random_range(0..self.keys),
            Some(cdf) => {
                let u: f64 = rng.random();
                // The first rank whose cumulative probability exceeds u;
                // rounding can leave the last entry a hair under 1.0.
                cdf.partition_point(|&c| c <= u).min(self.keys - 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const DRAWS: usize = 400_000;

    fn counts(chooser: &KeyChooser, seed: u64) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0; chooser.keys()];
        for _ in 0..DRAWS {
            counts[chooser.sample(&mut rng)] += 1;
        }
        counts
    }

    #[test]
    fn zipf_099_hottest_key_frequency_matches_theory() {
        let keys = 100_000;
        let s = 0.99;
        let chooser = KeyChooser::new(keys, s).unwrap();
        let harmonic: f64 = (1..=keys).map(|k| (k as f64).powf(-s)).sum();
        let theory = 1.0 / harmonic;
        assert!((chooser.probability(0) - theory).abs() < 1e-12);
        // ~8% of draws: a 400k sample puts the observed share within ~1% of
        // it (relative standard error ~0.5%).
        assert!(theory > 0.07 && theory < 0.09, "theory {theory}");
        let c = counts(&chooser, 7);
        let observed = c[0] as f64 / DRAWS as f64;
        assert!(
            (observed - theory).abs() / theory < 0.03,
            "rank 1 drew {observed}, theory {theory}"
        );
        // Rank 2 is drawn 2^-0.99 times as often as rank 1, and ranks fall
        // off monotonically on average.
        let ratio = c[1] as f64 / c[0] as f64;
        assert!(
            (ratio - 2f64.powf(-s)).abs() < 0.03,
            "rank 2 / rank 1 = {ratio}"
        );
        let head: usize = c[..10].iter().sum();
        let tail: usize = c[keys - 10..].iter().sum();
        assert!(head > 100 * tail.max(1));
    }

    #[test]
    fn zipf_0_is_uniform() {
        let keys = 100;
        let chooser = KeyChooser::new(keys, 0.0).unwrap();
        assert_eq!(chooser.probability(0), 0.01);
        assert_eq!(chooser.probability(99), 0.01);
        assert_eq!(chooser.probability(100), 0.0);
        let c = counts(&chooser, 11);
        let expected = (DRAWS / keys) as f64;
        // Each bucket is binomial with σ ≈ 63; 5σ bounds never flake.
        for (i, &n) in c.iter().enumerate() {
            assert!(
                (n as f64 - expected).abs() < 5.0 * expected.sqrt(),
                "key {i} drawn {n} times, expected {expected}"
            );
        }
    }

    #[test]
    fn every_draw_is_in_range_even_for_one_key() {
        let mut rng = SmallRng::seed_from_u64(1);
        for s in [0.0, 0.5, 0.99, 2.0] {
            let one = KeyChooser::new(1, s).unwrap();
            assert!((0..1000).all(|_| one.sample(&mut rng) == 0));
            let many = KeyChooser::new(1000, s).unwrap();
            assert!((0..10_000).all(|_| many.sample(&mut rng) < 1000));
            let total: f64 = (0..1000).map(|i| many.probability(i)).sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(KeyChooser::new(0, 0.5).unwrap_err(), ZipfError::NoKeys);
        assert!(matches!(
            KeyChooser::new(10, -1.0),
            Err(ZipfError::BadExponent(_))
        ));
        assert!(matches!(
            KeyChooser::new(10, f64::NAN),
            Err(ZipfError::BadExponent(_))
        ));
    }
}
