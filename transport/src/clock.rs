//! The wall clock, read here and nowhere in `anna`: drivers read it and
//! hand the time to the roles they drive.

use anna::ring::stable_hash;
use anna::time::Time;

/// The real time now, in microseconds since the Unix epoch.
pub fn now() -> Time {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time(u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX))
}

/// A number unique to this process, this moment and `salt`, without a
/// random source: what tells a restarted process from the one it replaces
/// (boot numbers) and one writer from another (writer ids). Only drivers
/// call this; roles are handed the result.
pub fn fresh_id(salt: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seed = format!("{}/{salt}/{nanos}", std::process::id());
    stable_hash(seed.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fresh_ids_differ_by_salt_and_moment() {
        assert_ne!(super::fresh_id("a"), super::fresh_id("b"));
        let first = super::fresh_id("a");
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_ne!(first, super::fresh_id("a"));
    }

    #[test]
    fn now_is_after_2020() {
        assert!(super::now().as_millis() > 1_577_836_800_000);
    }
}
