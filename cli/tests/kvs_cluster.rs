//! The KVS as real processes on loopback, without faults: every lattice type
//! through the router, many writers merging into one key, and garbage on
//! every socket.

mod cluster;

use anna::client::{ClientError, OpOutput};
use anna::lattice::{
    Counter, LatticeKind, LatticeValue, Lww, MapLattice, Max, Min, OrderedSetLattice, Priority,
    SetLattice,
};
use anna::protocol::{Outcome, PROTOCOL_VERSION};
use cluster::{client_config, wait_until, Cluster, Probe};
use std::collections::BTreeSet;
use std::time::Duration;

fn set_of(items: &[&str]) -> LatticeValue {
    LatticeValue::Set(SetLattice::new(items.iter().map(|s| s.as_bytes().to_vec())))
}

fn elements(v: Option<LatticeValue>) -> BTreeSet<Vec<u8>> {
    match v {
        Some(LatticeValue::Set(s)) => s.into_reveal().into_iter().collect(),
        None => BTreeSet::new(),
        Some(other) => panic!("expected a set, got {other:?}"),
    }
}

#[test]
fn puts_and_gets_of_several_lattice_types_go_through_the_router_and_merge() {
    let cluster = Cluster::start(3, 2, 2);
    let mut c = cluster.client(client_config());

    c.put_lww("lww", b"one".to_vec()).unwrap();
    c.put_lww("lww", b"two".to_vec()).unwrap();
    match c.get("lww").unwrap() {
        Some(LatticeValue::Lww(l)) => assert_eq!(l.value(), b"two"),
        other => panic!("lww: {other:?}"),
    }

    c.put("set", set_of(&["a", "b"])).unwrap();
    c.put("set", set_of(&["b", "c"])).unwrap();
    let want: BTreeSet<Vec<u8>> = [b"a", b"b", b"c"].iter().map(|s| s.to_vec()).collect();
    assert_eq!(elements(c.get("set").unwrap()), want);

    let ordered = |items: &[&str]| {
        LatticeValue::OrderedSet(OrderedSetLattice::new(
            items.iter().map(|s| s.as_bytes().to_vec()),
        ))
    };
    c.put("ordered", ordered(&["z", "a"])).unwrap();
    c.put("ordered", ordered(&["m"])).unwrap();
    assert_eq!(c.get("ordered").unwrap(), Some(ordered(&["a", "m", "z"])));

    c.put("max", LatticeValue::Max(Max::new(5))).unwrap();
    c.put("max", LatticeValue::Max(Max::new(3))).unwrap();
    assert_eq!(c.get("max").unwrap(), Some(LatticeValue::Max(Max::new(5))));
    c.put("min", LatticeValue::Min(Min::new(5))).unwrap();
    c.put("min", LatticeValue::Min(Min::new(3))).unwrap();
    assert_eq!(c.get("min").unwrap(), Some(LatticeValue::Min(Min::new(3))));

    // Two writers: their increments add up, each counted once.
    let mut other = cluster.client(client_config());
    let mut up = Counter::default();
    up.increment(c.writer(), 5);
    c.put("counter", LatticeValue::Counter(up)).unwrap();
    let mut down = Counter::default();
    down.decrement(other.writer(), 2);
    other.put("counter", LatticeValue::Counter(down)).unwrap();
    // The two puts may have reached different replicas: wait for gossip.
    wait_until(
        "both increments on the replica read",
        Duration::from_secs(5),
        || match c.get("counter").unwrap() {
            Some(LatticeValue::Counter(n)) if n.value() == 3 => Some(()),
            Some(LatticeValue::Counter(_)) => None,
            got => panic!("counter: {got:?}"),
        },
    );

    let at = c.timestamp();
    let first = MapLattice::new([
        (
            "name".to_string(),
            LatticeValue::Lww(Lww::new(at, b"ada".to_vec())),
        ),
        ("score".to_string(), LatticeValue::Max(Max::new(1))),
    ]);
    c.put("map", LatticeValue::Map(first)).unwrap();
    let second = MapLattice::new([("score".to_string(), LatticeValue::Max(Max::new(7)))]);
    other.put("map", LatticeValue::Map(second)).unwrap();
    // `other`'s write reaches the replica `c` reads by gossip; `c` sees
    // its own at once (its session).
    let merged = wait_until(
        "the other client's map field",
        Duration::from_secs(5),
        || {
            let got = c.get("map").unwrap();
            match &got {
                Some(LatticeValue::Map(m))
                    if m.get(&"score".to_string()) == Some(&LatticeValue::Max(Max::new(7))) =>
                {
                    Some(got)
                }
                Some(LatticeValue::Map(_)) => None,
                other => panic!("map: {other:?}"),
            }
        },
    );
    match merged {
        Some(LatticeValue::Map(m)) => {
            assert_eq!(
                m.get(&"score".to_string()),
                Some(&LatticeValue::Max(Max::new(7)))
            );
            assert!(
                matches!(m.get(&"name".to_string()), Some(LatticeValue::Lww(l)) if l.value() == b"ada")
            );
        }
        got => panic!("map: {got:?}"),
    }

    c.put(
        "priority",
        LatticeValue::Priority(Priority::new(2.0, b"low".to_vec())),
    )
    .unwrap();
    c.put(
        "priority",
        LatticeValue::Priority(Priority::new(1.0, b"high".to_vec())),
    )
    .unwrap();
    match c.get("priority").unwrap() {
        Some(LatticeValue::Priority(p)) => assert_eq!(p.reveal(), Some((1.0, &b"high"[..]))),
        got => panic!("priority: {got:?}"),
    }

    // A write of another type is refused and leaves the value as it was.
    match c.put("lww", set_of(&["x"])) {
        Err(ClientError::TypeMismatch { key, mismatch }) => {
            assert_eq!(key, "lww");
            assert_eq!(mismatch.stored, LatticeKind::Lww);
            assert_eq!(mismatch.incoming, LatticeKind::Set);
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    assert!(matches!(c.get("lww").unwrap(), Some(LatticeValue::Lww(l)) if l.value() == b"two"));

    assert_eq!(c.get("never-written").unwrap(), None);
    c.delete("lww").unwrap();
    assert_eq!(c.get("lww").unwrap(), None);

    // Multi-key: one request per replica thread, values in key order.
    let many: Vec<(String, LatticeValue)> = (0..40)
        .map(|i| (format!("many-{i}"), LatticeValue::Max(Max::new(i))))
        .collect();
    c.put_many(many.clone()).unwrap();
    let mut keys: Vec<&str> = many.iter().map(|(k, _)| k.as_str()).collect();
    keys.push("never-written");
    let got = c.get_many(&keys).unwrap();
    let want: Vec<Option<LatticeValue>> = many
        .into_iter()
        .map(|(_, v)| Some(v))
        .chain([None])
        .collect();
    assert_eq!(got, want);
    match c.put_many(vec![("max".to_string(), set_of(&["x"]))]) {
        Err(ClientError::TypeMismatch { key, .. }) => assert_eq!(key, "max"),
        other => panic!("expected a type mismatch, got {other:?}"),
    }
}

#[test]
fn concurrent_set_merges_from_many_clients_converge_to_their_union_on_every_replica() {
    const CLIENTS: usize = 8;
    const PUTS: usize = 30;
    let cluster = Cluster::start(3, 2, 3);
    let key = "shared-set";
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let mut c = cluster.client(client_config());
            std::thread::spawn(move || {
                let mut acked = BTreeSet::new();
                for i in 0..PUTS {
                    let item = format!("w{w}-{i}");
                    if c.put(key, set_of(&[&item])).is_ok() {
                        acked.insert(item.into_bytes());
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.join().expect("a writer panicked"));
    }
    let attempted = CLIENTS * PUTS;
    assert!(
        acked.len() * 10 >= attempted * 9,
        "only {} of {attempted} puts acknowledged",
        acked.len()
    );

    // Through the client: stable, and holding every acknowledged element
    // (an unacknowledged put may have landed too, but nothing else).
    let mut c = cluster.client(client_config());
    let mut previous = None;
    let seen = wait_until(
        "the set to read the same twice",
        Duration::from_secs(10),
        || {
            let now = elements(c.get(key).ok()?);
            let stable = previous.as_ref() == Some(&now) && now.is_superset(&acked);
            previous = Some(now.clone());
            stable.then_some(now)
        },
    );
    assert!(
        seen.iter().all(|e| e.starts_with(b"w")),
        "an element nobody wrote: {seen:?}"
    );
    assert!(seen.len() <= attempted);

    // Every replica, read directly, converges to that same union.
    let mut probe = Probe::new();
    let owners = probe.owners(&cluster.router(), &[key.to_string()]).unwrap();
    let owners = &owners[0].1;
    assert_eq!(owners.len(), 3, "three replicas: {owners:?}");
    wait_until(
        "every replica to hold the union",
        Duration::from_secs(10),
        || {
            owners
                .iter()
                .all(|o| match probe.read_at(o, &[key.to_string()]) {
                    Some(r) => match &r[0].outcome {
                        Outcome::Value(v) => elements(Some(v.clone())) == seen,
                        _ => false,
                    },
                    None => false,
                })
                .then_some(())
        },
    );
}

/// splitmix64: a seeded source for the garbage, so a failure replays.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A frame that does not decode: empty, short, long, or one whose
    /// version prefix is right and whose body is noise.
    fn frame(&mut self) -> Vec<u8> {
        loop {
            let len = match self.next() % 10 {
                0 => 0,
                1..=5 => (self.next() % 32) as usize,
                6..=8 => (self.next() % 4096) as usize,
                _ => 256 << 10,
            };
            let mut bytes: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
            if len >= 2 && self.next().is_multiple_of(2) {
                bytes[..2].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            }
            if anna::protocol::decode(&bytes).is_err() {
                return bytes;
            }
        }
    }
}

#[test]
fn random_bytes_on_every_socket_leave_every_process_serving() {
    const FRAMES: usize = 150;
    let mut cluster = Cluster::start(3, 2, 2);
    let mut c = cluster.client(client_config());
    for i in 0..20 {
        c.put_lww(&format!("before-{i}"), vec![i]).unwrap();
    }

    let mut probe = Probe::new();
    let mut garbage = Garbage(0x5EED);
    let sockets = cluster.all_sockets();
    for s in &sockets {
        for _ in 0..FRAMES {
            probe.send_raw(s, &garbage.frame());
        }
    }
    // One connection per socket delivers in order: a pong means every
    // frame before it was read (and dropped).
    for s in &sockets {
        assert!(
            probe.ping(s, Duration::from_secs(10)),
            "{s} stopped answering after garbage"
        );
    }
    cluster.assert_all_running();
    // Garbage with the right version and a sealed mode fails its
    // authentication; the rest does not parse.
    for s in &sockets {
        let malformed = probe.counter(s, "malformed").unwrap_or(0);
        let unauthenticated = probe.counter(s, "unauthenticated").unwrap_or(0);
        assert_eq!(malformed + unauthenticated, FRAMES as u64, "{s}");
        assert!(
            malformed > 0 && unauthenticated > 0,
            "{s}: {malformed} {unauthenticated}"
        );
    }

    let view = cluster.router_view();
    assert_eq!(
        view.live_nodes().count(),
        3,
        "garbage changed the membership: {view:?}"
    );
    for i in 0..20 {
        let got = c.get(&format!("before-{i}")).unwrap();
        assert!(
            matches!(got, Some(LatticeValue::Lww(l)) if l.value() == [i]),
            "before-{i}"
        );
    }
    let mut fresh = cluster.client(client_config());
    for i in 0..20 {
        fresh.put_lww(&format!("after-{i}"), vec![i]).unwrap();
    }
    let ids: Vec<_> = (0..20u8)
        .map(|i| (fresh.start_get(format!("after-{i}")), i))
        .collect();
    let mut done = 0;
    while done < ids.len() {
        let (id, result) = fresh.wait_any().unwrap();
        let i = ids
            .iter()
            .find(|(op, _)| *op == id)
            .map(|(_, i)| *i)
            .unwrap();
        assert!(
            matches!(&result, Ok(OpOutput::Value(Some(LatticeValue::Lww(l)))) if l.value() == [i]),
            "after-{i}: {result:?}"
        );
        done += 1;
    }
    cluster.assert_all_running();
}

#[test]
fn raising_a_keys_replication_puts_a_copy_on_every_node() {
    let cluster = Cluster::start(3, 1, 1);
    let mut c = cluster.client(client_config());
    c.put_lww("hot", b"v".to_vec()).expect("put");
    let factor = anna::cluster::ReplicationFactor {
        global: 3,
        local: 1,
    };
    c.set_replication("hot", factor).expect("set replication");
    // The override is a metadata key in the KVS itself.
    match c.get(&anna::cluster::replication_key("hot")).expect("get") {
        Some(LatticeValue::Lww(l)) => assert_eq!(l.value(), factor.to_bytes()),
        other => panic!("replication metadata of `hot`: {other:?}"),
    }
    let mut probe = Probe::new();
    let key = vec!["hot".to_string()];
    let owners = wait_until("three owners of `hot`", Duration::from_secs(10), || {
        let placements = probe.owners(&cluster.router(), &key)?;
        let owners = placements.into_iter().next()?.1;
        (owners.len() == 3).then_some(owners)
    });
    for owner in owners {
        wait_until(
            &format!("{owner} holding `hot`"),
            Duration::from_secs(10),
            || {
                let r = probe.read_at(&owner, &key)?;
                matches!(&r[0].outcome, Outcome::Value(LatticeValue::Lww(l)) if l.value() == b"v")
                    .then_some(())
            },
        );
    }
}
