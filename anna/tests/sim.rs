//! The seeded simulator with toy roles: delivery, loss, duplication,
//! reordering, partitions, crashes, replay from a seed, convergence of a
//! little gossip protocol over many seeds, and the spin guard.
//!
//! `SQUALL_SIM_SEED=<n>` makes the many-seed tests run seed `n` only: every
//! failure names its seed, so this replays it.

use anna::protocol::{Address, Message};
use anna::role::{Driver, PingResponder, Step};
use anna::sim::{Fate, Network, Sim, SimConfig, SimError, ORIGIN};
use roles::{addr, gossip_run, ms, ping, Node, Peer, Spinner};
use std::time::Duration;

#[path = "sim/roles.rs"]
mod roles;

/// The seeds a many-seed test runs: `SQUALL_SIM_SEED` alone if set.
fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("SQUALL_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SQUALL_SIM_SEED must be a u64")],
        Err(_) => default.collect(),
    }
}

fn peer<'a>(sim: &'a Sim<Peer>, at: &Address) -> &'a Peer {
    sim.role(at).expect("a peer is hosted there")
}

/// Two peers pinging each other every 10 ms, forever.
fn pair(config: SimConfig) -> (Sim<Peer>, Address, Address) {
    let (a, b) = (addr("a"), addr("b"));
    let mut sim = config.build().unwrap();
    sim.add(a.clone(), Peer::new(&a, &b, ms(10), u64::MAX));
    sim.add(b.clone(), Peer::new(&b, &a, ms(10), u64::MAX));
    (sim, a, b)
}

#[test]
fn ping_pong_delivers_every_message_without_faults() {
    let (pinger, server) = (addr("pinger"), addr("server"));
    let mut sim: Sim<Node> = SimConfig::new(1).build().unwrap();
    sim.add(
        pinger.clone(),
        Node::Peer(Peer::new(&pinger, &server, ms(10), 50)),
    );
    sim.add(server.clone(), Node::Responder(PingResponder::default()));

    sim.run().unwrap();

    let Some(Node::Peer(p)) = sim.role(&pinger) else {
        panic!("pinger gone")
    };
    let Some(Node::Responder(r)) = sim.role(&server) else {
        panic!("server gone")
    };
    assert_eq!((p.sent, p.pongs, r.answered()), (50, 50, 50));
    let stats = sim.stats();
    assert_eq!((stats.sent, stats.delivered, stats.ticks), (100, 100, 50));
    assert_eq!(stats.dropped + stats.duplicated + stats.blocked, 0);
    assert_eq!(sim.in_flight(), 0);
}

#[test]
fn a_tick_asked_for_in_the_past_comes_at_now() {
    let (a, b) = (addr("a"), addr("b"));
    let mut sim: Sim<Peer> = SimConfig::new(1).build().unwrap();
    sim.run_for(Duration::from_secs(1));
    sim.add(a.clone(), Peer::new(&a, &b, ms(10), 1));
    assert_eq!(sim.step_event(), Some(Fate::Ticked));
    assert_eq!(sim.now(), ORIGIN + Duration::from_secs(1));
    let first = sim.trace().find(|e| e.fate == Fate::Ticked).unwrap();
    assert_eq!((first.at, first.kind), (sim.now(), "tick"));
}

#[test]
fn messages_to_unhosted_addresses_wait_in_an_outside_mailbox() {
    let (server, client) = (addr("server"), addr("client"));
    let mut sim: Sim<PingResponder> = SimConfig::new(2).build().unwrap();
    sim.add(server.clone(), PingResponder::default());
    for id in 0..3 {
        sim.send(client.clone(), server.clone(), ping(id, &client));
    }
    sim.run_for(ms(100));
    let mut ids: Vec<u64> = sim
        .take_outside(&client)
        .into_iter()
        .map(|m| match m {
            Message::Pong { id, .. } => id.0,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2]);
    assert!(sim.take_outside(&client).is_empty());
    assert_eq!(sim.stats().outside, 3);
}

#[test]
fn a_drop_rate_loses_about_that_share_of_messages() {
    let (a, b) = (addr("a"), addr("b"));
    let mut sim: Sim<Peer> = SimConfig::new(3).drop_rate(0.3).build().unwrap();
    sim.add(a.clone(), Peer::new(&a, &b, ms(1), 1_000));
    sim.add(b.clone(), Peer::new(&b, &a, ms(1), 0));
    sim.run().unwrap();

    let stats = sim.stats();
    let share = stats.dropped as f64 / stats.sent as f64;
    assert!((0.25..0.35).contains(&share), "dropped share {share}");
    // A round trip survives both hops with probability 0.49.
    let pongs = peer(&sim, &a).pongs;
    assert!((400..580).contains(&pongs), "{pongs} pongs of 1000 pings");
    assert_eq!(peer(&sim, &b).answered, stats.delivered - pongs);
}

#[test]
fn a_duplicate_rate_delivers_about_that_share_twice() {
    let (server, client) = (addr("server"), addr("client"));
    let mut sim: Sim<PingResponder> = SimConfig::new(4).duplicate_rate(0.2).build().unwrap();
    sim.add(server.clone(), PingResponder::default());
    for id in 0..2_000 {
        sim.send(client.clone(), server.clone(), ping(id, &client));
    }
    sim.run().unwrap();

    let answered = sim.role(&server).unwrap().answered();
    assert!((2_300..2_500).contains(&answered), "{answered} answers");
    let pongs = sim.take_outside(&client);
    let mut distinct: Vec<_> = pongs
        .iter()
        .map(|m| match m {
            Message::Pong { id, .. } => id.0,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2_000, "no loss without a drop rate");
    let stats = sim.stats();
    assert_eq!(stats.sent, 2_000 + answered);
    assert_eq!(
        pongs.len() as u64,
        answered + stats.duplicated - (answered - 2_000)
    );
}

#[test]
fn latencies_stay_in_range_and_reorder_messages() {
    let (recorder, client) = (addr("recorder"), addr("client"));
    let mut sim: Sim<Node> = SimConfig::new(5).latency(ms(2), ms(8)).build().unwrap();
    sim.add(recorder.clone(), Node::Recorder(Vec::new()));
    let sent_at = sim.now();
    for id in 0..100 {
        sim.send(client.clone(), recorder.clone(), ping(id, &client));
    }
    sim.run().unwrap();

    let Some(Node::Recorder(log)) = sim.role(&recorder) else {
        panic!("recorder gone")
    };
    assert_eq!(log.len(), 100);
    for (at, _) in log {
        let latency = at.saturating_since(sent_at);
        assert!((ms(2)..=ms(8)).contains(&latency), "latency {latency:?}");
    }
    let ids: Vec<_> = log
        .iter()
        .map(|(_, m)| match m {
            Message::Ping { id, .. } => id.0,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(
        ids.windows(2).any(|w| w[0] > w[1]),
        "no reordering: {ids:?}"
    );
}

#[test]
fn a_partition_blocks_both_ways_and_repair_restores_delivery() {
    let (mut sim, a, b) = pair(SimConfig::new(6));
    sim.partition(&a, &b);
    sim.run_for(ms(200));
    assert_eq!(peer(&sim, &a).answered + peer(&sim, &b).answered, 0);
    assert!(sim.stats().blocked >= 38, "{:?}", sim.stats());

    sim.repair(&b, &a);
    sim.run_for(ms(200));
    assert!(peer(&sim, &a).answered > 15 && peer(&sim, &b).answered > 15);
    assert!(peer(&sim, &a).pongs > 15 && peer(&sim, &b).pongs > 15);
}

#[test]
fn isolation_cuts_a_node_off_from_everyone_until_healed() {
    let (a, b, c) = (addr("a"), addr("b"), addr("c"));
    let mut sim: Sim<Peer> = SimConfig::new(7).build().unwrap();
    sim.add(a.clone(), Peer::new(&a, &b, ms(10), u64::MAX));
    sim.add(b.clone(), Peer::new(&b, &c, ms(10), u64::MAX));
    sim.add(c.clone(), Peer::new(&c, &a, ms(10), u64::MAX));
    sim.isolate(&b);
    sim.run_for(ms(200));
    assert_eq!((peer(&sim, &b).answered, peer(&sim, &b).pongs), (0, 0));
    assert_eq!((peer(&sim, &a).pongs, peer(&sim, &c).answered), (0, 0));
    assert!(peer(&sim, &c).pongs > 15 && peer(&sim, &a).answered > 15);

    sim.heal();
    sim.run_for(ms(200));
    assert!(peer(&sim, &b).answered > 15 && peer(&sim, &b).pongs > 15);
}

#[test]
fn a_crashed_role_gets_nothing_and_its_ticks_stop() {
    let (mut sim, a, b) = pair(SimConfig::new(8));
    sim.run_for(ms(100));
    let before = sim.crash(&b).expect("b was hosted");
    assert!(before.answered > 0);
    assert!(sim.is_crashed(&b) && sim.role(&b).is_none());
    let pongs = peer(&sim, &a).pongs;

    sim.run_for(ms(200));
    assert!(peer(&sim, &a).pongs <= pongs + 1, "only pongs already sent");
    assert!(sim.stats().undeliverable >= 19, "{:?}", sim.stats());
    let crashed_at = ORIGIN + ms(100);
    assert!(!sim
        .trace()
        .any(|e| e.at > crashed_at && e.to == b && e.fate == Fate::Delivered));
    assert!(!sim
        .trace()
        .any(|e| e.at > crashed_at && e.from == b && e.fate == Fate::Ticked));
}

#[test]
fn a_restarted_role_starts_fresh() {
    let (mut sim, a, b) = pair(SimConfig::new(9));
    sim.run_for(ms(100));
    sim.crash(&b);
    sim.run_for(ms(100));
    let restarted_at = sim.now();
    sim.add(b.clone(), Peer::new(&b, &a, ms(10), u64::MAX));
    assert!(!sim.is_crashed(&b));
    assert_eq!(peer(&sim, &b).answered, 0);

    sim.run_for(ms(100));
    let fresh = peer(&sim, &b);
    assert!(
        (1..=12).contains(&fresh.sent),
        "sent {} since restart",
        fresh.sent
    );
    assert!(fresh.answered > 0 && fresh.answered < peer(&sim, &a).sent);
    let first_tick = sim
        .trace()
        .find(|e| e.from == b && e.fate == Fate::Ticked && e.at >= restarted_at)
        .unwrap();
    assert_eq!(first_tick.at, restarted_at, "the fresh role ticks at once");
}

#[test]
fn gossip_converges_after_a_lossy_phase_for_200_seeds() {
    for seed in seeds(0..200) {
        let (outcome, sim) = gossip_run(seed);
        assert!(
            outcome.converged,
            "seed {seed} did not converge: {outcome:?}\n{}",
            sim.trace_dump()
        );
        assert!(sim.stats().dropped > 0 && sim.stats().duplicated > 0);
    }
}

#[test]
fn the_same_seed_replays_identically_and_other_seeds_do_not() {
    let (first, first_sim) = gossip_run(42);
    let (again, again_sim) = gossip_run(42);
    assert_eq!(first, again);
    assert_eq!(first_sim.stats(), again_sim.stats());
    assert_eq!(first_sim.now(), again_sim.now());
    assert!(first_sim.trace().eq(again_sim.trace()));

    let mut digests: Vec<u64> = (0..20).map(|seed| gossip_run(seed).0.digest).collect();
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), 20, "two seeds gave the same trace");
}

#[test]
fn a_spinning_role_is_backed_off_so_time_moves_on() {
    let spinner = addr("spinner");
    let mut sim: Sim<Spinner> = SimConfig::new(10).max_stale_ticks(8).build().unwrap();
    sim.add(
        spinner.clone(),
        Spinner {
            spinning: true,
            ..Spinner::default()
        },
    );
    sim.run_for(ms(1));

    // One tick, eight stale ones at once, then 1, 2, 4, ... 256 µs apart.
    assert_eq!(sim.now(), ORIGIN + ms(1));
    let ticks: Vec<_> = sim
        .role(&spinner)
        .unwrap()
        .ticks
        .clone()
        .into_iter()
        .collect();
    let offsets: Vec<_> = ticks
        .iter()
        .map(|(at, n)| (at.saturating_since(ORIGIN).as_micros(), *n))
        .collect();
    let mut expected = vec![(0, 9)];
    expected.extend([1, 3, 7, 15, 31, 63, 127, 255, 511].map(|us| (us, 1)));
    assert_eq!(offsets, expected);
    assert_eq!(sim.stats().throttled_ticks, 9);

    // Then at most one tick per SPIN_BACKOFF_MAX.
    sim.run_for(Duration::from_secs(1));
    let ticks = sim.stats().ticks;
    assert!((1_000..=1_020).contains(&ticks), "{ticks} ticks");
}

#[test]
fn a_role_that_stops_spinning_gets_its_stale_allowance_back() {
    let spinner = addr("spinner");
    let mut sim: Sim<Spinner> = SimConfig::new(11).max_stale_ticks(8).build().unwrap();
    sim.add(
        spinner.clone(),
        Spinner {
            spinning: true,
            ..Spinner::default()
        },
    );
    sim.run_for(ms(10));
    sim.role_mut(&spinner).unwrap().spinning = false;
    sim.run_for(ms(100));
    let before = sim.stats();
    sim.role_mut(&spinner).unwrap().spinning = true;
    sim.run_until(|s| s.stats().ticks > before.ticks + 8, Duration::ZERO);
    assert_eq!(
        sim.stats().ticks,
        before.ticks + 8,
        "eight stale ticks at once"
    );
    assert_eq!(sim.stats().throttled_ticks, before.throttled_ticks);
}

#[test]
fn driver_steps_wait_at_most_max_wait_and_stop_when_nothing_is_pending() {
    let (server, client) = (addr("server"), addr("client"));
    let mut sim: Sim<PingResponder> = SimConfig::new(11).latency(ms(5), ms(5)).build().unwrap();
    sim.add(server.clone(), PingResponder::default());
    assert_eq!(Driver::step(&mut sim, ms(1)), Ok(Step::Stopped));

    sim.send(client.clone(), server.clone(), ping(1, &client));
    assert_eq!(Driver::step(&mut sim, ms(1)), Ok(Step::Idle));
    assert_eq!(Driver::now(&sim), ORIGIN + ms(1));
    assert_eq!(Driver::step(&mut sim, ms(10)), Ok(Step::Delivered));
    assert_eq!(sim.now(), ORIGIN + ms(5));
    // The pong goes outside, which no role sees: the run is then over.
    assert_eq!(Driver::step(&mut sim, ms(10)), Ok(Step::Stopped));
    assert_eq!(sim.take_outside(&client).len(), 1);
}

#[test]
fn bad_settings_are_refused_and_leave_the_network_as_it_was() {
    assert!(matches!(
        SimConfig::new(0).drop_rate(-0.1).build::<Peer>(),
        Err(SimError::Rate { .. })
    ));
    let (mut sim, _, _) = pair(SimConfig::new(12).drop_rate(0.1));
    assert!(sim.set_drop_rate(2.0).is_err());
    assert!(sim.set_latency(ms(0), ms(1)).is_err());
    assert_eq!(sim.network().drop_rate, 0.1);
    sim.set_duplicate_rate(0.5).unwrap();
    assert_eq!(
        sim.network(),
        Network {
            duplicate_rate: 0.5,
            ..SimConfig::new(12).drop_rate(0.1).network
        }
    );
}

#[test]
fn a_skewed_role_reads_its_own_clock_and_ticks_as_often_as_the_others() {
    use anna::sim::Skew;
    let (ahead, behind, plain, rec) = (addr("ahead"), addr("behind"), addr("plain"), addr("rec"));
    let mut sim: Sim<Node> = SimConfig::new(21).build().unwrap();
    for p in [&ahead, &behind, &plain] {
        sim.add(p.clone(), Node::Peer(Peer::new(p, &rec, ms(10), 20)));
    }
    sim.add(rec.clone(), Node::Recorder(Vec::new()));
    sim.skew(&ahead, Skew::Ahead(Duration::from_secs(5)));
    sim.skew(&behind, Skew::Behind(Duration::from_secs(5)));
    sim.skew(&rec, Skew::Ahead(ms(7)));
    assert_eq!(sim.clock_of(&ahead), sim.now() + Duration::from_secs(5));
    assert_eq!(sim.clock_of(&plain), sim.now());
    sim.run_for(ms(300));
    let sent = |a: &Address| match sim.role(a) {
        Some(Node::Peer(p)) => p.sent,
        _ => panic!(),
    };
    assert_eq!((sent(&ahead), sent(&behind), sent(&plain)), (20, 20, 20));
    // The recorder read its own clock at every arrival: the simulator's
    // time of the arrival, 7 ms on.
    let Some(Node::Recorder(log)) = sim.role(&rec) else {
        panic!()
    };
    let arrivals: Vec<_> = sim
        .trace()
        .filter(|e| e.to == rec && e.fate == Fate::Delivered)
        .map(|e| e.at + ms(7))
        .collect();
    let read: Vec<_> = log.iter().map(|(at, _)| *at).collect();
    assert_eq!(read, arrivals);
    assert_eq!(read.len(), 60);
    // A restart keeps the machine's clock; setting it right ends the skew.
    sim.crash(&ahead);
    sim.add(ahead.clone(), Node::Responder(Default::default()));
    assert_eq!(sim.skew_of(&ahead), Skew::Ahead(Duration::from_secs(5)));
    sim.skew(&ahead, Skew::None);
    assert_eq!(sim.clock_of(&ahead), sim.now());
}

#[test]
fn a_partition_of_two_groups_cuts_across_them_only() {
    let (a, b, c, d) = (addr("a"), addr("b"), addr("c"), addr("d"));
    let mut sim: Sim<Peer> = SimConfig::new(22).build().unwrap();
    // a and b ping each other, as do c and d; a pings across to c, and d
    // to b.
    sim.add(a.clone(), Peer::new(&a, &c, ms(10), u64::MAX));
    sim.add(b.clone(), Peer::new(&b, &a, ms(10), u64::MAX));
    sim.add(c.clone(), Peer::new(&c, &d, ms(10), u64::MAX));
    sim.add(d.clone(), Peer::new(&d, &b, ms(10), u64::MAX));
    sim.partition_groups(&[a.clone(), b.clone()], &[c.clone(), d.clone()]);
    sim.run_for(ms(200));
    assert_eq!(peer(&sim, &a).pongs + peer(&sim, &d).pongs, 0);
    assert!(peer(&sim, &b).pongs > 15 && peer(&sim, &c).pongs > 15);
    assert!(sim.stats().blocked >= 38, "{:?}", sim.stats());
    sim.heal();
    sim.run_for(ms(200));
    assert!(peer(&sim, &a).pongs > 15 && peer(&sim, &d).pongs > 15);
}

#[test]
fn a_paused_role_holds_its_messages_and_ticks_until_resumed() {
    let (mut sim, a, b) = pair(SimConfig::new(23));
    sim.run_for(ms(50));
    sim.pause(&b);
    let (answered, sent) = (peer(&sim, &b).answered, peer(&sim, &b).sent);
    sim.run_for(ms(200));
    assert!(sim.is_paused(&b));
    assert_eq!(
        (peer(&sim, &b).answered, peer(&sim, &b).sent),
        (answered, sent)
    );
    let held = sim.stats().held;
    assert!(held >= 15, "{:?}", sim.stats());
    sim.resume(&b);
    sim.run_for(ms(20));
    assert!(peer(&sim, &b).answered >= answered + held);
    assert!(peer(&sim, &a).pongs > 15);
}
