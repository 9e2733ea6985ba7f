//! The monitor under the seeded simulator, with real storage workers and a
//! router: its decisions leave as messages (`Scale` to an actuator, which
//! here is an outside address the test reads), so the whole monitor, its
//! actions included, runs where faults can be injected.

use anna::cluster::ReplicationFactor;
use anna::kvs::{StorageWorker, WorkerConfig};
use anna::lattice::WriterId;
use anna::protocol::monitor::NodeKind;
use anna::protocol::{Address, Message, NodeId, NodeInfo};
use anna::role::{Input, Outbox, Role};
use anna::router::{Router, RouterConfig};
use anna::sim::{Sim, SimConfig};
use anna::time::Time;
use squall_monitor::{Monitor, MonitorConfig, Outlets, TierPolicy};
use std::time::Duration;

enum Host {
    Worker(Box<StorageWorker>),
    Router(Box<Router>),
    Monitor(Box<Monitor>),
}

impl Role for Host {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match self {
            Host::Worker(w) => w.step(now, input, out),
            Host::Router(r) => r.step(now, input, out),
            Host::Monitor(m) => m.step(now, input, out),
        }
    }

    fn next_tick(&self) -> Option<Time> {
        match self {
            Host::Worker(w) => w.next_tick(),
            Host::Router(r) => r.next_tick(),
            Host::Monitor(m) => m.next_tick(),
        }
    }
}

fn node(id: u64) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        boot: id,
        direct: Vec::new(),
        threads: vec![Address(format!("node{id}/t0"))],
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("SQUALL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SQUALL_SIM_SEED is a number")],
        Err(_) => (0..50).collect(),
    }
}

#[test]
fn a_crashed_storage_node_makes_the_monitor_ask_its_actuator_for_the_floor_again() {
    for seed in seeds() {
        let mut sim: Sim<Host> = SimConfig::new(seed)
            .drop_rate(0.02)
            .latency(Duration::from_micros(50), Duration::from_millis(2))
            .build()
            .unwrap();
        let router = Address::from("router");
        let replication = ReplicationFactor {
            global: 2,
            local: 1,
        };
        sim.add(
            router.clone(),
            Host::Router(Box::new(Router::new(
                RouterConfig {
                    replication,
                    ..RouterConfig::default()
                },
                router.clone(),
                vec![],
            ))),
        );
        for id in 1..=3 {
            let info = node(id);
            let worker = StorageWorker::new(
                WorkerConfig {
                    replication,
                    ..WorkerConfig::default()
                },
                info.clone(),
                0,
                vec![router.clone()],
            );
            sim.add(info.threads[0].clone(), Host::Worker(Box::new(worker)));
        }
        let actuator = Address::from("actuator");
        let metrics = Address::from("metrics");
        let config = MonitorConfig {
            period: Duration::from_millis(500),
            storage: TierPolicy {
                min_nodes: 3,
                max_nodes: 5,
                // A lost `Scale` is asked again a grace period later.
                grace: Duration::from_secs(4),
                ..TierPolicy::default()
            },
            compute: TierPolicy {
                enabled: false,
                ..TierPolicy::default()
            },
            ..MonitorConfig::default()
        };
        let monitor = Address::from("monitor");
        sim.add(
            monitor.clone(),
            Host::Monitor(Box::new(Monitor::new(
                config,
                monitor.clone(),
                vec![router.clone()],
                vec![],
                Outlets {
                    actuator: Some(actuator.clone()),
                    metrics: Some(metrics.clone()),
                },
                anna::client::ClientConfig::default(),
                WriterId(99),
            ))),
        );
        sim.run_for(Duration::from_secs(5));
        let scaled = |sim: &mut Sim<Host>| -> Vec<(NodeKind, u32)> {
            sim.take_outside(&actuator)
                .into_iter()
                .filter_map(|m| match m {
                    Message::Scale { kind, replicas } => Some((kind, replicas)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            scaled(&mut sim),
            [],
            "seed {seed}: a whole tier needs nothing"
        );
        let texts = sim.take_outside(&metrics);
        assert!(
            texts.iter().any(|m| matches!(m, Message::Metrics { text, .. } if text.contains("squall_nodes{kind=\"storage\",state=\"observed\"} 3"))),
            "seed {seed}: no /metrics text with the three nodes"
        );

        sim.crash(&node(2).threads[0]);
        // The router's failure timeout (3 s), then two seconds below the
        // floor, then a monitor period (and, if the network lost the
        // message, a grace period more).
        sim.run_for(Duration::from_secs(12));
        let asked = scaled(&mut sim);
        assert!(
            asked.contains(&(NodeKind::Storage, 3)),
            "seed {seed}: the monitor never asked for the floor again: {asked:?}\n{}",
            sim.trace_dump()
        );
        let Some(Host::Router(r)) = sim.role(&router) else {
            panic!()
        };
        assert_eq!(
            r.cluster().live_nodes().count(),
            2,
            "seed {seed}: the crash happened"
        );
    }
}
