use super::*;
use anna::lattice::{Timestamp, WriterId};
use anna::protocol::compute::ChangeKind;

#[test]
fn an_event_pickles_as_a_call_of_squall_events_change() {
    let e = ChangeEvent {
        seq: 1,
        trigger: "t".into(),
        key: "up/a".into(),
        kind: ChangeKind::Put,
        at: Timestamp {
            wall_ms: 1_700_000_000_000,
            logical: 2,
            writer: WriterId(u64::MAX),
        },
        value: b"raw".to_vec(),
    };
    let p = event_payload(&e);
    assert_eq!(&p[..2], &[0x80, 4]);
    assert_eq!(*p.last().unwrap(), b'.');
    let text = String::from_utf8_lossy(&p);
    for part in ["squall.events", "_change", "up/a", "put", "raw"] {
        assert!(text.contains(part), "{part} missing from {p:?}");
    }
    // The largest writer id is a positive nine-byte LONG1.
    let max = [0x8a, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0];
    assert!(p.windows(max.len()).any(|w| w == max));
}
