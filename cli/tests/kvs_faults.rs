//! The KVS as real processes on loopback, under membership changes with
//! writes in flight: a node killed with SIGKILL, a node joining, a node
//! restarted under its id, a node stopped with SIGTERM. In each, no write
//! the client saw acknowledged may be lost.

mod cluster;

use anna::client::ClientConfig;
use anna::cluster::MemberStatus;
use anna::protocol::{Ack, NodeId};
use cluster::{
    assert_all_readable, assert_on_every_owner, client_config, wait_until, Cluster, Writer,
    FAILURE_TIMEOUT, TRANSITION_WINDOW,
};
use std::time::Duration;

/// Puts before the fault, and after it.
const BEFORE: usize = 150;
const AFTER: usize = 100;

fn acked_by(replicas: u8) -> ClientConfig {
    ClientConfig {
        put_ack: Ack::Replicas(replicas),
        ..client_config()
    }
}

fn live(cluster: &Cluster, id: u64) -> bool {
    cluster
        .router_view()
        .live_nodes()
        .any(|(n, _)| n == NodeId(id))
}

#[test]
fn writes_acknowledged_by_two_replicas_survive_a_kill_9_under_load() {
    let mut cluster = Cluster::start(3, 2, 3);
    let writer = Writer::start(cluster.router(), acked_by(2), "crash");
    writer.wait_for(BEFORE, Duration::from_secs(20));
    cluster.kill_node(2);
    wait_until(
        "the router to declare node 2 failed",
        FAILURE_TIMEOUT * 4,
        || (!live(&cluster, 2)).then_some(()),
    );
    writer.mark();
    writer.wait_for(writer.acked() + AFTER, Duration::from_secs(20));
    let report = writer.stop();
    assert!(report.acked_after_mark >= AFTER);

    assert_all_readable(
        &mut cluster.client(client_config()),
        &report.acked,
        Duration::from_secs(15),
    );
    // The two survivors each hold every key again.
    assert_on_every_owner(&cluster.router(), &report.acked, Duration::from_secs(15));
    cluster.assert_all_running();
}

#[test]
fn a_node_joining_under_write_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, 2, 2);
    let writer = Writer::start(cluster.router(), client_config(), "join");
    writer.wait_for(BEFORE, Duration::from_secs(20));
    cluster.start_node(4);
    cluster.wait_live(&[1, 2, 3, 4]);
    writer.mark();
    writer.wait_for(writer.acked() + AFTER, Duration::from_secs(20));
    let report = writer.stop();

    assert_eq!(cluster.router_view().live_nodes().count(), 4);
    assert_all_readable(
        &mut cluster.client(client_config()),
        &report.acked,
        Duration::from_secs(15),
    );
    // Past the transition window a read at an owner consults nobody else:
    // the keys must have been handed to the newcomer.
    std::thread::sleep(TRANSITION_WINDOW);
    assert_on_every_owner(&cluster.router(), &report.acked, Duration::from_secs(15));
    cluster.assert_all_running();
}

#[test]
fn a_node_killed_and_restarted_under_its_id_rejoins_as_a_new_incarnation_and_gets_its_keys_back() {
    let mut cluster = Cluster::start(3, 2, 2);
    let writer = Writer::start(cluster.router(), acked_by(2), "restart");
    writer.wait_for(BEFORE, Duration::from_secs(20));
    let report = writer.stop();
    let before = cluster
        .router_view()
        .member(NodeId(2))
        .expect("node 2 joined")
        .incarnation;

    cluster.kill_node(2);
    cluster.start_node(2);
    wait_until(
        "node 2's new incarnation at the router",
        Duration::from_secs(10),
        || {
            let view = cluster.router_view();
            let r = view.member(NodeId(2))?;
            (r.incarnation > before && matches!(r.status, MemberStatus::Up(_))).then_some(())
        },
    );
    cluster.wait_live(&[1, 2, 3]);

    assert_all_readable(
        &mut cluster.client(client_config()),
        &report.acked,
        Duration::from_secs(15),
    );
    std::thread::sleep(TRANSITION_WINDOW);
    assert_on_every_owner(&cluster.router(), &report.acked, Duration::from_secs(15));

    let mut c = cluster.client(acked_by(2));
    c.put_lww("after-restart", b"yes".to_vec()).unwrap();
    assert!(c.get("after-restart").unwrap().is_some());
    cluster.assert_all_running();
}

#[test]
fn a_node_stalled_past_the_failure_timeout_rejoins_by_itself_and_no_acknowledged_write_is_lost() {
    let mut cluster = Cluster::start(3, 2, 2);
    let writer = Writer::start(cluster.router(), acked_by(2), "stall");
    writer.wait_for(BEFORE, Duration::from_secs(20));
    let before = cluster
        .router_view()
        .member(NodeId(2))
        .expect("node 2 joined")
        .incarnation;
    cluster.signal_node(2, libc::SIGSTOP);
    wait_until(
        "the router to declare the stalled node 2 failed",
        FAILURE_TIMEOUT * 4,
        || (!live(&cluster, 2)).then_some(()),
    );
    writer.mark();
    writer.wait_for(writer.acked() + AFTER / 2, Duration::from_secs(20));
    cluster.signal_node(2, libc::SIGCONT);
    wait_until(
        "node 2 to rejoin as a new incarnation",
        Duration::from_secs(10),
        || {
            let view = cluster.router_view();
            let r = view.member(NodeId(2))?;
            (r.incarnation > before && matches!(r.status, MemberStatus::Up(_))).then_some(())
        },
    );
    writer.wait_for(writer.acked() + AFTER / 2, Duration::from_secs(20));
    let report = writer.stop();
    assert!(report.acked_after_mark >= AFTER);

    // Both sides say what happened.
    let router_log = cluster.router_log();
    assert!(router_log.contains("declared failed"), "{router_log}");
    assert!(router_log.contains("departed incarnation"), "{router_log}");
    let node_log = cluster.node_log(2);
    assert!(
        node_log.contains("declared departed while alive"),
        "{node_log}"
    );

    assert_all_readable(
        &mut cluster.client(client_config()),
        &report.acked,
        Duration::from_secs(15),
    );
    std::thread::sleep(TRANSITION_WINDOW);
    assert_on_every_owner(&cluster.router(), &report.acked, Duration::from_secs(15));
    cluster.assert_all_running();
}

#[test]
fn a_node_stopped_with_sigterm_under_load_hands_its_keys_over_and_departs() {
    // One replica per key: a key the leaving node did not hand over exists
    // nowhere else.
    let mut cluster = Cluster::start(3, 2, 1);
    let writer = Writer::start(cluster.router(), client_config(), "leave");
    writer.wait_for(BEFORE, Duration::from_secs(20));
    cluster.terminate_node(3);
    let status = cluster.wait_node_exit(3, Duration::from_secs(15));
    assert!(status.success(), "node 3 exited with {status}");
    let view = cluster.router_view();
    let record = view.member(NodeId(3)).expect("node 3 joined");
    assert_eq!(record.status, MemberStatus::Departed, "{view:?}");
    // Departed by its own word, not declared failed after it fell silent.
    let log = cluster.router_log();
    assert!(log.contains("node departed"), "{log}");
    assert!(!log.contains("declared failed"), "{log}");

    writer.mark();
    writer.wait_for(writer.acked() + AFTER, Duration::from_secs(20));
    let report = writer.stop();
    assert_all_readable(
        &mut cluster.client(client_config()),
        &report.acked,
        Duration::from_secs(10),
    );
    assert_on_every_owner(&cluster.router(), &report.acked, Duration::from_secs(10));
    cluster.assert_all_running();
}
