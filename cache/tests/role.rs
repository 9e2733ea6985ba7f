//! The cache as a state machine, driven with synthetic messages and an
//! explicit `now`: misses go to the KVS and subscribe at the owners, hits
//! stay local, pushes keep the replica fresh and reach executors, eviction
//! is least recently used by bytes, renewals and reports come on time.
//! The KVS behind it is `anna::sim::KvsDouble`, a real storage thread.

use anna::lattice::{KeyState, LatticeKind, LatticeValue, Max, SetLattice, Timestamp, WriterId};
use anna::protocol::compute::{CacheReport, Subscribe};
use anna::protocol::{
    Ack, Address, Gossip, KeyOp, KvsError, KvsRequest, KvsResponse, Message, Outcome, RequestId,
};
use anna::role::{Input, Outbox, Role};
use anna::sim::KvsDouble;
use anna::time::Time;
use squall_cache::{Cache, CacheConfig};
use std::time::Duration;

const MS: u64 = 1000;
const OWNER: &str = "w0";
const EXEC: &str = "exec";

fn addr(s: &str) -> Address {
    Address::from(s)
}

fn max(n: i64) -> LatticeValue {
    LatticeValue::Max(Max::new(n))
}

struct Harness {
    cache: Cache,
    /// The storage thread [`OWNER`] behind the router: every key's owner.
    kvs: KvsDouble,
    now: Time,
    next_id: u64,
}

type Sent = Vec<(Address, Message)>;

impl Harness {
    fn new(config: CacheConfig, schedulers: &[&str]) -> Harness {
        let cache = Cache::new(
            config,
            "node-a".to_string(),
            addr("cache"),
            vec![addr("router")],
            schedulers.iter().map(|s| addr(s)).collect(),
            WriterId(7),
        );
        Harness {
            cache,
            kvs: KvsDouble::new(OWNER).routed_by("router"),
            now: Time(1_000 * MS),
            next_id: 0,
        }
    }

    fn step(&mut self, input: Input) -> Sent {
        let mut out = Outbox::default();
        self.cache.step(self.now, input, &mut out);
        out.drain().collect()
    }

    fn send(&mut self, msg: Message) -> Sent {
        self.step(Input::Message(msg))
    }

    fn request(&mut self, ops: Vec<KeyOp>, ack: Ack) -> (RequestId, Sent) {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        let sent = self.send(Message::KvsRequest(KvsRequest {
            id,
            reply_to: addr(EXEC),
            ops,
            ack,
            shared_memory: None,
        }));
        (id, sent)
    }

    fn get(&mut self, key: &str) -> (RequestId, Sent) {
        self.request(vec![KeyOp::Get { key: key.into() }], Ack::FirstReplica)
    }

    /// A read of a key the cache does not hold, the KVS holding `value`
    /// (merged into what it held): the messages the cache sends on the
    /// answer.
    fn miss(&mut self, key: &str, value: Option<LatticeValue>) -> Sent {
        if let Some(value) = value {
            self.kvs.put(key, value);
        }
        let before = self.kvs.requests().len();
        let (_, sent) = self.get(key);
        let sent = self.serve(sent);
        let reqs = &self.kvs.requests()[before..];
        assert_eq!(reqs.len(), 1, "one read reached the owner: {reqs:?}");
        assert_eq!(reqs[0].reply_to, addr("cache"));
        // The cache reads whole states, so its copy is a faithful replica.
        assert!(
            matches!(reqs[0].ops[0], KeyOp::ReadState { .. }),
            "{reqs:?}"
        );
        sent
    }

    /// Lets the KVS answer what the cache sent in `sent`, and what it sends
    /// on the answers: everything else the cache sent.
    fn serve(&mut self, sent: Sent) -> Sent {
        self.kvs.serve(&mut self.cache, self.now, sent)
    }

    /// Answers a status request to the router in `sent`, if any, with the
    /// cluster of one node with one thread ([`OWNER`]), and nothing else:
    /// what the cache sends on it.
    fn answer_placement(&mut self, sent: Sent) -> Sent {
        let Some(request) = sent
            .iter()
            .find(|(to, m)| to == &addr("router") && matches!(m, Message::StatusRequest { .. }))
        else {
            return sent;
        };
        let (_, reply) = self.kvs.answer(self.now, request).expect("a placement");
        self.send(reply)
    }

    fn gossip(&mut self, entries: Vec<(&str, KeyState)>) -> Sent {
        self.send(Message::Gossip(Gossip {
            from: addr(OWNER),
            entries: entries.into_iter().map(|(k, s)| (k.into(), s)).collect(),
            ack: None,
        }))
    }

    fn counter(&self, name: &str) -> u64 {
        self.cache
            .counters()
            .into_iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }
}

fn kvs_request(sent: &Sent) -> (Address, KvsRequest) {
    sent.iter()
        .find_map(|(to, m)| match m {
            Message::KvsRequest(r) => Some((to.clone(), r.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no KVS request in {sent:?}"))
}

/// The responses sent to the executor.
fn responses(sent: &Sent) -> Vec<KvsResponse> {
    sent.iter()
        .filter_map(|(to, m)| match m {
            Message::KvsResponse(r) if to == &addr(EXEC) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn outcomes(sent: &Sent) -> Vec<Outcome> {
    let r = responses(sent);
    assert_eq!(r.len(), 1, "one response: {sent:?}");
    r[0].results.iter().map(|r| r.outcome.clone()).collect()
}

fn subscribes(sent: &Sent) -> Vec<(Address, Subscribe)> {
    sent.iter()
        .filter_map(|(to, m)| match m {
            Message::Subscribe(s) => Some((to.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

fn pushes_to(sent: &Sent, to: &str) -> Vec<Gossip> {
    sent.iter()
        .filter_map(|(a, m)| match m {
            Message::Gossip(g) if a == &addr(to) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_miss_fetches_from_the_kvs_then_subscribes_at_the_owner_and_a_second_read_is_a_hit() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    let sent = h.miss("k", Some(max(5)));
    assert_eq!(outcomes(&sent), vec![Outcome::Value(max(5))]);
    let subs = subscribes(&sent);
    assert_eq!(subs.len(), 1, "{sent:?}");
    assert_eq!(subs[0].0, addr(OWNER));
    assert_eq!(subs[0].1.subscriber, addr("cache"));
    assert_eq!(subs[0].1.keys, vec!["k".to_string()]);
    assert_eq!(subs[0].1.lease_ms, 10_000);
    assert!(h.cache.holds("k"));

    let (id, sent) = h.get("k");
    assert_eq!(sent.len(), 1, "a hit sends nothing to the KVS: {sent:?}");
    assert_eq!(responses(&sent)[0].id, id);
    assert_eq!(outcomes(&sent), vec![Outcome::Value(max(5))]);
    assert_eq!((h.counter("hits"), h.counter("misses")), (1, 1));
}

#[test]
fn a_key_the_kvs_does_not_hold_is_not_found_and_not_cached() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    let sent = h.miss("absent", None);
    assert_eq!(outcomes(&sent), vec![Outcome::NotFound]);
    assert!(subscribes(&sent).is_empty());
    assert!(!h.cache.holds("absent"));
    let (_, sent) = h.get("absent");
    assert!(matches!(
        kvs_request(&sent).1.ops[0],
        KeyOp::ReadState { .. }
    ));
    assert_eq!(h.counter("misses"), 2);
}

#[test]
fn reads_of_one_missing_key_share_one_fetch() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.kvs.put("k", max(1));
    let (_, sent) = h.get("k");
    let sent = h.answer_placement(sent);
    kvs_request(&sent);
    let (_, second) = h.get("k");
    assert!(second.is_empty(), "no second fetch: {second:?}");
    let sent = h.serve(sent);
    assert_eq!(h.kvs.requests().len(), 1);
    assert_eq!(responses(&sent).len(), 2, "both reads answered");
}

#[test]
fn a_pushed_update_refreshes_the_held_value_and_reaches_a_subscribed_executor() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.miss("k", Some(max(5)));
    let sent = h.send(Message::Subscribe(Subscribe {
        subscriber: addr(EXEC),
        keys: vec!["k".into(), "other".into()],
        lease_ms: 10_000,
    }));
    let now = pushes_to(&sent, EXEC);
    assert_eq!(now.len(), 1, "the held state at once: {sent:?}");
    assert_eq!(now[0].entries[0].1.value(), Some(&max(5)));

    let sent = h.gossip(vec![
        ("k", KeyState::from_value(max(9))),
        ("not-held", KeyState::from_value(max(1))),
    ]);
    let pushed = pushes_to(&sent, EXEC);
    assert_eq!(pushed.len(), 1, "{sent:?}");
    assert_eq!(pushed[0].from, addr("cache"));
    assert_eq!(pushed[0].ack, None);
    assert_eq!(pushed[0].entries.len(), 1);
    assert_eq!(pushed[0].entries[0].0, "k");
    assert_eq!(pushed[0].entries[0].1.value(), Some(&max(9)));
    assert!(
        !h.cache.holds("not-held"),
        "pushes of keys not held are ignored"
    );

    let (_, sent) = h.get("k");
    assert_eq!(outcomes(&sent), vec![Outcome::Value(max(9))]);
    assert_eq!(h.counter("hits"), 1);

    // A stale push changes nothing and is not passed on.
    let sent = h.gossip(vec![("k", KeyState::from_value(max(2)))]);
    assert!(pushes_to(&sent, EXEC).is_empty());

    // Once the executor's lease lapses it hears nothing more.
    h.advance(Duration::from_secs(11));
    let sent = h.gossip(vec![("k", KeyState::from_value(max(10)))]);
    assert!(pushes_to(&sent, EXEC).is_empty());
}

#[test]
fn a_function_write_stamped_past_the_clock_skew_is_refused_before_the_replica_takes_it() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    let lww = |wall_ms: u64, bytes: &[u8]| {
        LatticeValue::Lww(anna::lattice::Lww::new(
            Timestamp {
                wall_ms,
                logical: 0,
                writer: WriterId(3),
            },
            bytes.to_vec(),
        ))
    };
    let now_ms = h.now.as_millis();
    let (_, sent) = h.request(
        vec![KeyOp::Put {
            key: "k".into(),
            value: lww(now_ms + 60_000, b"future"),
        }],
        Ack::FirstReplica,
    );
    assert_eq!(sent.len(), 1, "nothing goes to the KVS: {sent:?}");
    assert!(
        matches!(
            outcomes(&sent)[0],
            Outcome::Error(KvsError::ClockAhead {
                ahead_ms: 60_000,
                max_ms: 10_000
            })
        ),
        "{sent:?}"
    );
    // Nothing held: the key is still a miss (no answer from the replica).
    let (_, sent) = h.get("k");
    assert!(responses(&sent).is_empty(), "{sent:?}");
    // Within the skew it goes on to the KVS as ever (no answer yet).
    let (_, sent) = h.request(
        vec![KeyOp::Put {
            key: "k2".into(),
            value: lww(now_ms + 1_000, b"soon"),
        }],
        Ack::FirstReplica,
    );
    assert!(responses(&sent).is_empty(), "{sent:?}");
}

#[test]
fn a_put_of_another_lattice_kind_is_refused_without_touching_anything() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.miss("k", Some(max(5)));
    let set = LatticeValue::Set(SetLattice::new([b"x".to_vec()]));
    let (_, sent) = h.request(
        vec![KeyOp::Put {
            key: "k".into(),
            value: set,
        }],
        Ack::FirstReplica,
    );
    assert_eq!(sent.len(), 1, "nothing goes to the KVS: {sent:?}");
    match &outcomes(&sent)[0] {
        Outcome::Error(KvsError::TypeMismatch(m)) => {
            assert_eq!((m.stored, m.incoming), (LatticeKind::Max, LatticeKind::Set));
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    let (_, sent) = h.get("k");
    assert_eq!(outcomes(&sent), vec![Outcome::Value(max(5))]);
}

#[test]
fn a_put_merges_locally_is_relayed_at_its_ack_level_and_answered_when_the_kvs_acknowledges() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.miss("k", Some(max(5)));
    let (id, sent) = h.request(
        vec![KeyOp::Put {
            key: "k".into(),
            value: max(8),
        }],
        Ack::Replicas(2),
    );
    assert!(
        responses(&sent).is_empty(),
        "not before the KVS acknowledges"
    );
    let (to, req) = kvs_request(&sent);
    assert_eq!((to, req.ack), (addr(OWNER), Ack::Replicas(2)));
    let (_, hit) = h.get("k");
    assert_eq!(
        outcomes(&hit),
        vec![Outcome::Value(max(8))],
        "merged locally"
    );
    let sent = h.serve(sent);
    assert_eq!(responses(&sent)[0].id, id);
    assert_eq!(outcomes(&sent), vec![Outcome::Stored { epoch: None }]);
    assert_eq!(h.kvs.state("k").and_then(KeyState::value), Some(&max(8)));
}

#[test]
fn a_write_the_kvs_refuses_reaches_the_executor_with_the_kvs_error() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.miss("k", Some(max(5)));
    let refused = KvsError::TooLarge { size: 9, limit: 8 };
    h.kvs.fail_with(Some(refused.clone()));
    let (id, sent) = h.request(
        vec![KeyOp::Put {
            key: "k".into(),
            value: max(8),
        }],
        Ack::FirstReplica,
    );
    assert!(responses(&sent).is_empty(), "the KVS decides");
    let sent = h.serve(sent);
    assert_eq!(responses(&sent)[0].id, id);
    assert_eq!(outcomes(&sent), vec![Outcome::Error(refused)]);
}

#[test]
fn a_request_of_several_operations_is_answered_once_in_order() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.miss("held", Some(max(1)));
    let at = Timestamp {
        wall_ms: 5,
        ..Timestamp::default()
    };
    let (id, sent) = h.request(
        vec![
            KeyOp::Get { key: "held".into() },
            KeyOp::Get {
                key: "missing".into(),
            },
            KeyOp::Delete {
                key: "held".into(),
                at,
            },
        ],
        Ack::FirstReplica,
    );
    assert!(responses(&sent).is_empty());
    assert!(!h.cache.holds("held"), "a delete drops the key at once");
    let before = h.kvs.requests().len();
    let last = h.serve(sent);
    let reqs = &h.kvs.requests()[before..];
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    for r in reqs {
        match &r.ops[0] {
            KeyOp::ReadState { .. } => {}
            KeyOp::Get { .. } => panic!("the cache reads whole states"),
            KeyOp::Delete { at: a, .. } => {
                assert_eq!(*a, at, "the executor's delete time is kept")
            }
            KeyOp::Put { .. } => panic!("no put was asked"),
        }
    }
    let r = responses(&last);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].id, id);
    let got: Vec<_> = r[0]
        .results
        .iter()
        .map(|r| (r.key.as_str(), r.outcome.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("held", Outcome::Value(max(1))),
            ("missing", Outcome::NotFound),
            ("held", Outcome::Stored { epoch: Some(at) }),
        ]
    );
}

#[test]
fn beyond_capacity_the_least_recently_used_key_is_evicted_and_no_longer_renewed() {
    let mut probe = Harness::new(CacheConfig::default(), &[]);
    probe.miss("k1", Some(max(1)));
    let one = probe.cache.bytes();
    let config = CacheConfig {
        capacity_bytes: 3 * one,
        ..CacheConfig::default()
    };
    let mut h = Harness::new(config, &[]);
    for k in ["k1", "k2", "k3"] {
        h.miss(k, Some(max(1)));
    }
    h.get("k1");
    h.miss("k4", Some(max(1)));
    assert!(h.cache.holds("k1"), "read recently");
    assert!(!h.cache.holds("k2"), "the least recently used");
    assert!(h.cache.holds("k3") && h.cache.holds("k4"));
    assert_eq!(h.counter("evictions"), 1);
    assert!(h.cache.bytes() <= 3 * one);

    let due = h.cache.next_tick().expect("a renewal is due");
    h.now = due;
    let sent = h.step(Input::Tick);
    let mut renewed: Vec<String> = subscribes(&sent)
        .into_iter()
        .flat_map(|(_, s)| s.keys)
        .collect();
    renewed.sort();
    assert_eq!(renewed, vec!["k1", "k3", "k4"]);
}

#[test]
fn subscriptions_are_renewed_every_third_of_the_lease() {
    let config = CacheConfig {
        lease: Duration::from_millis(3000),
        ..CacheConfig::default()
    };
    let mut h = Harness::new(config, &[]);
    assert_eq!(h.cache.next_tick(), None, "idle: no tick at all");
    let start = h.now;
    h.miss("k", Some(max(1)));
    assert_eq!(h.cache.next_tick(), Some(start + Duration::from_secs(1)));

    h.now = start + Duration::from_millis(999);
    assert!(subscribes(&h.step(Input::Tick)).is_empty(), "not yet");
    for round in 1..=3 {
        h.now = start + Duration::from_secs(round);
        let sent = h.step(Input::Tick);
        let subs = subscribes(&sent);
        assert_eq!(subs.len(), 1, "round {round}: {sent:?}");
        assert_eq!(subs[0].0, addr(OWNER));
        assert_eq!(subs[0].1.lease_ms, 3000);
        assert!(
            sent.iter()
                .any(|(to, m)| to == &addr("router") && matches!(m, Message::StatusRequest { .. })),
            "each renewal refreshes the placement"
        );
        h.answer_placement(sent);
        assert_eq!(
            h.cache.next_tick(),
            Some(start + Duration::from_secs(round + 1))
        );
    }
}

#[test]
fn reports_name_the_largest_keys_with_hits_and_misses() {
    let config = CacheConfig {
        report_keys: 2,
        report_period: Duration::from_millis(500),
        ..CacheConfig::default()
    };
    let mut h = Harness::new(config, &["sched"]);
    let set = |n: usize| LatticeValue::Set(SetLattice::new((0..n).map(|i| vec![i as u8; 64])));
    h.miss("small", Some(set(1)));
    h.miss("large", Some(set(20)));
    h.miss("medium", Some(set(5)));
    h.get("small");
    let due = h.cache.next_tick().expect("a report is due");
    h.now = due;
    let sent = h.step(Input::Tick);
    let reports: Vec<CacheReport> = sent
        .iter()
        .filter_map(|(to, m)| match m {
            Message::CacheReport(r) if to == &addr("sched") => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "{sent:?}");
    let r = &reports[0];
    assert_eq!((r.node.as_str(), &r.cache), ("node-a", &addr("cache")));
    let names: Vec<&str> = r.keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, vec!["large", "medium"]);
    assert!(r.keys[0].1 > r.keys[1].1);
    assert_eq!((r.hits, r.misses), (1, 3));
    assert_eq!(h.cache.next_tick(), Some(due + Duration::from_millis(500)));
}

#[test]
fn a_status_request_is_answered_with_named_counters() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.miss("k", Some(max(1)));
    let sent = h.send(Message::StatusRequest {
        id: RequestId(42),
        reply_to: addr("admin"),
    });
    let Some((to, Message::StatusReply { id, counters, .. })) = sent.into_iter().next() else {
        panic!("no status reply");
    };
    assert_eq!((to, id), (addr("admin"), RequestId(42)));
    for name in [
        "hits",
        "misses",
        "evictions",
        "bytes",
        "keys",
        "subscriptions",
        "received",
    ] {
        assert!(
            counters.iter().any(|(k, _)| k == name),
            "no {name}: {counters:?}"
        );
    }
    assert!(counters.contains(&("keys".to_string(), 1)));
}

/// A read of a caller's version: `KeyOp::ReadState` asking for `at_least`.
fn read_at_least(h: &mut Harness, key: &str, at_least: KeyState) -> Sent {
    let op = KeyOp::ReadState {
        key: key.into(),
        at_least: Some(at_least),
    };
    h.request(vec![op], Ack::FirstReplica).1
}

#[test]
fn a_read_of_a_callers_version_is_a_hit_only_if_the_held_state_covers_it() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.miss("k", Some(max(5)));
    let held = KeyState::from_value(max(5));

    // The held state covers an older write: a hit, answered with the state.
    let sent = read_at_least(&mut h, "k", KeyState::from_value(max(3)));
    assert_eq!(outcomes(&sent), vec![Outcome::State(held.clone())]);
    assert!(!sent
        .iter()
        .any(|(_, m)| matches!(m, Message::KvsRequest(_))));

    // The caller wrote 9, which the cache has not seen: fetched from the
    // KVS with the version, and answered only once it is there.
    h.kvs.put("k", max(9));
    let newer = KeyState::from_value(max(9));
    let sent = read_at_least(&mut h, "k", newer.clone());
    assert!(responses(&sent).is_empty(), "never the older held state");
    let (_, req) = kvs_request(&sent);
    assert!(matches!(req.ops[0], KeyOp::ReadState { .. }), "{req:?}");
    let sent = h.serve(sent);
    assert_eq!(outcomes(&sent), vec![Outcome::State(newer.clone())]);
    // The held replica moved on: plain reads see 9 now.
    let (_, sent) = h.get("k");
    assert_eq!(outcomes(&sent), vec![Outcome::Value(max(9))]);
    assert_eq!(h.counter("misses"), 2);
}

#[test]
fn a_delete_the_cache_missed_is_learnt_by_a_read_of_the_callers_version() {
    let mut h = Harness::new(CacheConfig::default(), &[]);
    h.miss("k", Some(max(5)));
    let at = Timestamp {
        wall_ms: 50,
        ..Timestamp::default()
    };
    h.kvs.delete("k", at);
    let sent = read_at_least(&mut h, "k", KeyState::tombstone(at));
    kvs_request(&sent);
    let sent = h.serve(sent);
    assert_eq!(
        outcomes(&sent),
        vec![Outcome::State(KeyState::tombstone(at))]
    );
    let (_, sent) = h.get("k");
    assert_eq!(
        outcomes(&sent),
        vec![Outcome::NotFound],
        "the held copy learnt the delete"
    );
}

/// The file system a cache writes values in shared memory to: a temporary
/// directory, with every file written and removed counted.
struct TempFiles {
    dir: std::path::PathBuf,
    next: u64,
}

impl squall_cache::ValueFiles for TempFiles {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<String> {
        self.next += 1;
        let path = self.dir.join(self.next.to_string());
        std::fs::write(&path, bytes)?;
        Ok(path.to_str().expect("a UTF-8 path").to_string())
    }

    fn remove(&mut self, path: &str) {
        std::fs::remove_file(path).expect("a file the cache wrote, removed once");
    }
}

const LOCAL_EXEC: &str = "ipc:///run/squall/exec-1";

fn lww(at: u64, len: usize) -> LatticeValue {
    let stamp = Timestamp {
        wall_ms: at,
        logical: 0,
        writer: WriterId(1),
    };
    LatticeValue::Lww(anna::lattice::Lww::new(stamp, vec![at as u8; len]))
}

fn shared_harness(name: &str, shared_bytes: u64) -> (Harness, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("squall-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = CacheConfig {
        shared_bytes,
        ..CacheConfig::default()
    };
    let mut h = Harness::new(config, &[]);
    let files = TempFiles {
        dir: dir.clone(),
        next: 0,
    };
    h.cache.share_values_in(Box::new(files));
    (h, dir)
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// A read of `key` answered to `reply_to`: its one outcome.
fn read_for(h: &mut Harness, key: &str, reply_to: &str) -> Outcome {
    h.next_id += 1;
    let sent = h.send(Message::KvsRequest(KvsRequest {
        id: RequestId(h.next_id),
        reply_to: addr(reply_to),
        ops: vec![KeyOp::Get { key: key.into() }],
        ack: Ack::FirstReplica,
        shared_memory: None,
    }));
    let mut found: Vec<Outcome> = sent
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::KvsResponse(r) if to == addr(reply_to) => Some(r.results[0].outcome.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1);
    found.remove(0)
}

/// The answer a reader makes of a shared outcome: its file's bytes put
/// back in.
fn filled(outcome: Outcome) -> (String, Outcome) {
    let Outcome::Shared(shared) = outcome else {
        panic!("not shared: {outcome:?}");
    };
    let path = shared.path.clone();
    let bytes = std::fs::read(&path).expect("the file named");
    (
        path,
        shared
            .fill(bytes.into())
            .expect("a file of the value's length"),
    )
}

#[test]
fn a_large_value_goes_to_a_local_executor_in_shared_memory_written_once() {
    let (mut h, dir) = shared_harness("once", 1 << 30);
    let big = lww(5, 200_000);
    h.miss("big", Some(big.clone()));
    let (path, answer) = filled(read_for(&mut h, "big", LOCAL_EXEC));
    assert_eq!(answer, Outcome::Value(big.clone()));
    let (again, answer) = filled(read_for(&mut h, "big", LOCAL_EXEC));
    assert_eq!((again, answer), (path, Outcome::Value(big.clone())));
    assert_eq!(
        h.counter("shared_written"),
        1,
        "one file for every read of a version"
    );
    assert_eq!(h.counter("shared_keys"), 1);
    assert_eq!(h.counter("shared_bytes"), 200_000);

    // A reader elsewhere (a `tcp://` reply address) gets it in the frame;
    // so does everyone for a small value.
    assert_eq!(
        read_for(&mut h, "big", "tcp://10.0.0.9:4000"),
        Outcome::Value(big)
    );
    h.miss("small", Some(lww(6, 1000)));
    assert_eq!(
        read_for(&mut h, "small", LOCAL_EXEC),
        Outcome::Value(lww(6, 1000))
    );
    assert_eq!(files_in(&dir), 1);

    // A whole state asked (a session's read) comes back whole.
    let at_least = KeyState::from_value(lww(5, 0));
    h.next_id += 1;
    let sent = h.send(Message::KvsRequest(KvsRequest {
        id: RequestId(h.next_id),
        reply_to: addr(LOCAL_EXEC),
        ops: vec![KeyOp::ReadState {
            key: "big".into(),
            at_least: Some(at_least),
        }],
        ack: Ack::FirstReplica,
        shared_memory: None,
    }));
    let outcome = sent
        .into_iter()
        .find_map(|(_, m)| match m {
            Message::KvsResponse(r) => Some(r.results[0].outcome.clone()),
            _ => None,
        })
        .expect("an answer");
    let (_, answer) = filled(outcome);
    let Outcome::State(state) = answer else {
        panic!("{answer:?}");
    };
    assert_eq!(state.value(), Some(&lww(5, 200_000)));
    drop(h);
    assert_eq!(files_in(&dir), 0, "a cache that stops removes its files");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_newer_version_or_a_delete_retires_the_file_which_goes_after_its_grace() {
    let (mut h, dir) = shared_harness("retire", 1 << 30);
    h.miss("k", Some(lww(5, 100_000)));
    let (first, _) = filled(read_for(&mut h, "k", LOCAL_EXEC));

    h.gossip(vec![("k", KeyState::from_value(lww(9, 150_000)))]);
    let (second, answer) = filled(read_for(&mut h, "k", LOCAL_EXEC));
    assert_eq!(answer, Outcome::Value(lww(9, 150_000)));
    assert_ne!(first, second);
    assert!(
        std::path::Path::new(&first).exists(),
        "kept for readers told it"
    );
    assert_eq!(h.counter("shared_bytes"), 250_000);
    h.advance(squall_cache::shared::GRACE + Duration::from_millis(1));
    h.step(Input::Tick);
    assert!(
        !std::path::Path::new(&first).exists(),
        "removed after its grace"
    );
    assert!(std::path::Path::new(&second).exists());
    assert_eq!(h.counter("shared_bytes"), 150_000);

    let (_, sent) = h.request(
        vec![KeyOp::Delete {
            key: "k".into(),
            at: Timestamp {
                wall_ms: 10,
                logical: 0,
                writer: WriterId(1),
            },
        }],
        Ack::All,
    );
    h.serve(sent);
    assert_eq!(h.counter("shared_keys"), 0);
    h.advance(squall_cache::shared::GRACE + Duration::from_millis(1));
    h.step(Input::Tick);
    assert_eq!(files_in(&dir), 0);
    assert_eq!(h.counter("shared_bytes"), 0);
    drop(h);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_files_retired_ones_included_stay_within_shared_bytes() {
    let (mut h, dir) = shared_harness("cap", 300_000);
    h.miss("a", Some(lww(1, 200_000)));
    h.miss("b", Some(lww(2, 200_000)));
    h.miss("huge", Some(lww(3, 400_000)));
    let (a, _) = filled(read_for(&mut h, "a", LOCAL_EXEC));
    // b does not fit beside a: a is retired to make room, and b goes in
    // the frame until a's file is gone.
    assert_eq!(
        read_for(&mut h, "b", LOCAL_EXEC),
        Outcome::Value(lww(2, 200_000))
    );
    assert_eq!(h.counter("shared_keys"), 0, "a was retired");
    assert!(std::path::Path::new(&a).exists(), "kept for its grace");
    h.advance(squall_cache::shared::GRACE + Duration::from_millis(1));
    h.step(Input::Tick);
    let (b, answer) = filled(read_for(&mut h, "b", LOCAL_EXEC));
    assert_eq!(answer, Outcome::Value(lww(2, 200_000)));
    assert_ne!(a, b);
    assert_eq!(
        read_for(&mut h, "huge", LOCAL_EXEC),
        Outcome::Value(lww(3, 400_000))
    );

    // A writer replacing b faster than retired files go: each version is
    // shared while the cap allows, then goes in the frame.
    for v in 10..14u64 {
        h.gossip(vec![("b", KeyState::from_value(lww(v, 100_000)))]);
        let outcome = read_for(&mut h, "b", LOCAL_EXEC);
        assert!(
            h.counter("shared_bytes") <= 300_000,
            "{}",
            h.counter("shared_bytes")
        );
        let shared = matches!(outcome, Outcome::Shared(_));
        assert_eq!(shared, v < 11, "version {v}: {outcome:?}");
    }
    drop(h);
    std::fs::remove_dir_all(&dir).unwrap();
}
