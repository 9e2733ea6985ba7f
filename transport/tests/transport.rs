//! The ZeroMQ transport and driver on real sockets: typed messages over
//! `tcp://` and `inproc://`, garbage counted and survived, ticks delivered,
//! shutdown from another thread.

use anna::protocol::{Address, Message, RequestId};
use anna::role::{Driver, Input, Outbox, PingResponder, Role, Step};
use anna::time::Time;
use squall_transport::{Receiver, Sender, ZmqDriver};
use std::time::{Duration, Instant};

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn ping(id: u64, reply_to: &Address) -> Message {
    Message::Ping {
        id: RequestId(id),
        reply_to: reply_to.clone(),
    }
}

fn round_trip_typed_messages(bind: &str) {
    let ctx = zmq::Context::new();
    let mut rx = Receiver::bind(&ctx, &Address::from(bind)).unwrap();
    let mut tx = Sender::new(&ctx);
    let to = rx.address().clone();
    for id in 0..100 {
        tx.send(&to, &ping(id, &to)).unwrap();
    }
    for id in 0..100 {
        assert_eq!(rx.recv(WAIT).unwrap(), Some(ping(id, &to)));
    }
    assert_eq!(rx.stats().received, 100);
    assert_eq!(tx.stats().sent, 100);
}

#[test]
fn typed_messages_cross_tcp_loopback_in_order() {
    round_trip_typed_messages("tcp://127.0.0.1:*");
}

#[test]
fn typed_messages_cross_inproc_in_order() {
    round_trip_typed_messages("inproc://transport-test");
}

#[test]
fn a_bound_wildcard_port_is_named_in_the_address() {
    let ctx = zmq::Context::new();
    let rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let port: u16 = rx
        .address()
        .as_str()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(port, 0);
}

#[test]
fn binding_a_taken_address_is_an_error_naming_it() {
    let ctx = zmq::Context::new();
    let first = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let err = Receiver::bind(&ctx, first.address()).err().unwrap();
    assert!(err.to_string().contains(first.address().as_str()), "{err}");
}

#[test]
fn recv_times_out_with_none() {
    let ctx = zmq::Context::new();
    let mut rx = Receiver::bind(&ctx, &Address::from("inproc://quiet")).unwrap();
    let started = Instant::now();
    assert_eq!(rx.recv(Some(Duration::from_millis(30))).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(25));
}

#[test]
fn a_driven_role_answers_over_tcp_and_survives_garbage() {
    let ctx = zmq::Context::new();
    let mut driver = ZmqDriver::bind(
        &ctx,
        &Address::from("tcp://127.0.0.1:*"),
        PingResponder::default(),
    )
    .unwrap();
    let server = driver.address().clone();
    let stop = driver.shutdown_handle();
    let thread = std::thread::spawn(move || {
        driver.run().unwrap();
        driver
    });

    let mut rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let me = rx.address().clone();
    let mut tx = Sender::new(&ctx);
    tx.send_raw(&server, b"").unwrap();
    tx.send_raw(&server, &[0xff; 64]).unwrap();
    tx.send_raw(&server, &[1, 0, 200, 200, 200]).unwrap();
    for id in 0..10 {
        tx.send(&server, &ping(id, &me)).unwrap();
        assert_eq!(
            rx.recv(WAIT).unwrap(),
            Some(Message::Pong {
                id: RequestId(id),
                boot: 0
            })
        );
    }

    stop.stop().unwrap();
    let driver = thread.join().unwrap();
    assert_eq!(driver.role().answered(), 10);
    let stats = driver.stats();
    assert_eq!((stats.received, stats.malformed, stats.sent), (10, 3, 10));
}

/// Asks for a tick every 20 ms and counts them.
struct Ticker {
    next: Time,
    ticks: u32,
}

impl Role for Ticker {
    fn step(&mut self, now: Time, input: Input, _out: &mut Outbox) {
        if input == Input::Tick {
            self.ticks += 1;
            self.next = now + Duration::from_millis(20);
        }
    }

    fn next_tick(&self) -> Option<Time> {
        Some(self.next)
    }
}

#[test]
fn the_driver_sleeps_until_a_tick_is_due_then_delivers_it() {
    let ctx = zmq::Context::new();
    let role = Ticker {
        next: squall_transport::clock::now() + Duration::from_millis(20),
        ticks: 0,
    };
    let mut driver = ZmqDriver::bind(&ctx, &Address::from("inproc://ticker"), role).unwrap();
    let started = Instant::now();
    let mut steps = 0;
    while driver.role().ticks < 3 {
        assert!(driver.step(Duration::from_secs(5)).unwrap() != Step::Stopped);
        steps += 1;
    }
    assert!(started.elapsed() >= Duration::from_millis(55));
    // Three ticks need three waits and three deliveries; a spinning driver
    // would take thousands of steps.
    assert!(steps <= 12, "{steps} steps for 3 ticks");
}

#[test]
fn an_idle_driver_blocks_for_the_whole_wait() {
    let ctx = zmq::Context::new();
    let mut driver = ZmqDriver::bind(
        &ctx,
        &Address::from("inproc://idle"),
        PingResponder::default(),
    )
    .unwrap();
    let started = Instant::now();
    assert_eq!(driver.step(Duration::from_millis(50)).unwrap(), Step::Idle);
    assert!(started.elapsed() >= Duration::from_millis(45));
}

/// Answers pings after working `work` on each, and keeps the busy time
/// its driver last reported.
struct SlowResponder {
    work: Duration,
    answered: u32,
    observed_busy_us: u64,
}

impl Role for SlowResponder {
    fn step(&mut self, _now: Time, input: Input, out: &mut Outbox) {
        if let Input::Message(Message::Ping { id, reply_to }) = input {
            std::thread::sleep(self.work);
            self.answered += 1;
            out.send(reply_to, Message::Pong { id, boot: 0 });
        }
    }

    fn next_tick(&self) -> Option<Time> {
        None
    }

    fn observe_transport(&mut self, stats: anna::role::TransportStats) {
        self.observed_busy_us = stats.busy_us;
    }
}

#[test]
fn the_driver_counts_time_handling_inputs_as_busy_and_time_waiting_as_not() {
    let ctx = zmq::Context::new();
    let role = SlowResponder {
        work: Duration::from_millis(20),
        answered: 0,
        observed_busy_us: 0,
    };
    let mut driver = ZmqDriver::bind(&ctx, &Address::from("inproc://busy"), role).unwrap();
    let server = driver.address().clone();
    let mut tx = Sender::new(&ctx);
    let me = Address::from("inproc://busy-client");
    let _rx = Receiver::bind(&ctx, &me).unwrap();

    for id in 0..3 {
        tx.send(&server, &ping(id, &me)).unwrap();
    }
    while driver.role().answered < 3 {
        assert_ne!(driver.step(Duration::from_secs(5)).unwrap(), Step::Stopped);
    }
    let busy = driver.stats().busy_us;
    assert!(busy >= 60_000, "3 × 20 ms of work counted as {busy} µs");

    assert_eq!(driver.step(Duration::from_millis(100)).unwrap(), Step::Idle);
    let idle = driver.stats().busy_us - busy;
    assert!(
        idle < 20_000,
        "100 ms blocked waiting counted {idle} µs busy"
    );

    // The role is handed the figure before its next step.
    tx.send(&server, &ping(3, &me)).unwrap();
    while driver.role().answered < 4 {
        driver.step(Duration::from_secs(5)).unwrap();
    }
    assert!(driver.role().observed_busy_us >= 60_000);
}
