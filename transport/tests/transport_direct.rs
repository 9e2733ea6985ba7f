//! The direct path on real TCP connections: a client's request is answered
//! on the connection it came on (not at the address it names), anything
//! that is not a client's request is dropped and counted, garbage is
//! counted without closing the connection, a length beyond the largest
//! frame closes it, and an answer for a connection gone never reaches the
//! connection that took its place.

use anna::protocol::{Address, Message, RequestId};
use anna::role::{Driver, PingResponder};
use squall_transport::direct::{DirectLink, DirectServer};
use squall_transport::{Receiver, Sender, ZmqDriver};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// A ping responder serving a direct endpoint, stepped by the test.
fn responder(ctx: &zmq::Context) -> (ZmqDriver<PingResponder>, Address) {
    let any = Address::from("tcp://127.0.0.1:*");
    let mut driver = ZmqDriver::bind(ctx, &any, PingResponder::default()).unwrap();
    let direct = DirectServer::bind(&any).unwrap();
    let endpoint = direct.address().clone();
    driver.serve_direct(direct);
    (driver, endpoint)
}

/// A client's end: a link, the sender that seals for it and the receiver
/// that opens what comes back.
struct Client {
    link: DirectLink,
    tx: Sender,
    rx: Receiver,
    answers: VecDeque<Message>,
}

impl Client {
    fn connect(ctx: &zmq::Context, endpoint: &Address) -> Client {
        Client {
            link: DirectLink::connect(endpoint, WAIT).unwrap(),
            tx: Sender::new(ctx),
            rx: Receiver::bind(ctx, &Address::from("inproc://direct-client")).unwrap(),
            answers: VecDeque::new(),
        }
    }

    fn send(&mut self, msg: &Message) {
        let mut frame = Vec::new();
        let to = self.link.address().clone();
        self.tx.seal(&to, msg, &mut frame).unwrap();
        self.link.send(&mut frame).unwrap();
    }

    /// Steps `driver` until an answer arrives on the link.
    fn answer(&mut self, driver: &mut ZmqDriver<PingResponder>) -> Option<Message> {
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            driver.step(Duration::from_millis(20)).unwrap();
            let mut items = [zmq::PollItem::from_fd(self.link.fd(), zmq::POLLIN)];
            if zmq::poll(&mut items, 20).unwrap() > 0 {
                self.link.receive(&mut self.rx, &mut self.answers).unwrap();
            }
            if let Some(msg) = self.answers.pop_front() {
                return Some(msg);
            }
        }
        None
    }
}

fn ping(id: u64, reply_to: &str) -> Message {
    Message::Ping {
        id: RequestId(id),
        reply_to: Address::from(reply_to),
    }
}

/// Steps `driver` for a while, answering whatever comes.
fn settle(driver: &mut ZmqDriver<PingResponder>) {
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        driver.step(Duration::from_millis(20)).unwrap();
    }
}

#[test]
fn a_request_is_answered_on_the_connection_it_came_on() {
    let ctx = zmq::Context::new();
    let (mut driver, endpoint) = responder(&ctx);
    // The address the ping names is a ZeroMQ socket that would take the
    // answer if it went there: it must not.
    let mut elsewhere = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let mut client = Client::connect(&ctx, &endpoint);
    for id in 1..=3 {
        client.send(&ping(id, elsewhere.address().as_str()));
        match client.answer(&mut driver) {
            Some(Message::Pong { id: got, .. }) => assert_eq!(got, RequestId(id)),
            other => panic!("expected pong {id} on the link, got {other:?}"),
        }
    }
    assert_eq!(driver.role().answered(), 3);
    assert_eq!(
        elsewhere.recv(Some(Duration::from_millis(100))).unwrap(),
        None
    );
    assert_eq!(driver.direct().unwrap().connections(), 1);
}

#[test]
fn what_is_not_a_clients_request_is_dropped_and_counted_and_the_connection_serves_on() {
    let ctx = zmq::Context::new();
    let (mut driver, endpoint) = responder(&ctx);
    let mut client = Client::connect(&ctx, &endpoint);
    // A pong is no request: nothing may come this way but requests.
    client.send(&Message::Pong {
        id: RequestId(9),
        boot: 1,
    });
    settle(&mut driver);
    assert_eq!(driver.stats().malformed, 1);
    assert_eq!(driver.role().answered(), 0);
    // Garbage of a plausible length: counted, the connection kept.
    let mut raw =
        std::net::TcpStream::connect(endpoint.as_str().trim_start_matches("tcp://")).unwrap();
    raw.write_all(&7u32.to_le_bytes()).unwrap();
    raw.write_all(b"garbage").unwrap();
    settle(&mut driver);
    assert_eq!(driver.stats().malformed, 2);
    assert_eq!(driver.direct().unwrap().connections(), 2);
    client.send(&ping(1, "tcp://127.0.0.1:1"));
    assert!(matches!(
        client.answer(&mut driver),
        Some(Message::Pong { .. })
    ));
}

#[test]
fn a_length_beyond_the_largest_frame_closes_the_connection() {
    let ctx = zmq::Context::new();
    let (mut driver, endpoint) = responder(&ctx);
    let mut raw =
        std::net::TcpStream::connect(endpoint.as_str().trim_start_matches("tcp://")).unwrap();
    raw.write_all(&u32::MAX.to_le_bytes()).unwrap();
    settle(&mut driver);
    assert_eq!(driver.stats().malformed, 1);
    assert_eq!(driver.direct().unwrap().connections(), 0);
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        raw.read(&mut byte).unwrap_or(0),
        0,
        "the connection is closed"
    );
    // Others are still served.
    let mut client = Client::connect(&ctx, &endpoint);
    client.send(&ping(1, "tcp://127.0.0.1:1"));
    assert!(matches!(
        client.answer(&mut driver),
        Some(Message::Pong { .. })
    ));
}

#[test]
fn an_answer_for_a_connection_gone_never_reaches_the_one_in_its_place() {
    let ctx = zmq::Context::new();
    let mut server = DirectServer::bind(&Address::from("tcp://127.0.0.1:*")).unwrap();
    let mut receiver = Receiver::bind(&ctx, &Address::from("inproc://direct-server")).unwrap();
    let mut sender = Sender::new(&ctx);
    let endpoint = server.address().clone();
    let take = |server: &mut DirectServer, receiver: &mut Receiver| {
        let until = Instant::now() + WAIT;
        loop {
            server.take_up(receiver);
            if let Some(Message::Ping { reply_to, .. }) = server.next_request() {
                return reply_to;
            }
            assert!(Instant::now() < until, "no request taken");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut first = Client::connect(&ctx, &endpoint);
    first.send(&ping(1, "tcp://127.0.0.1:1"));
    let gone = take(&mut server, &mut receiver);
    assert!(gone.as_str().starts_with("direct://"), "{gone}");
    drop(first);
    let until = Instant::now() + WAIT;
    while server.connections() > 0 {
        assert!(
            Instant::now() < until,
            "the closed connection is not noticed"
        );
        server.take_up(&mut receiver);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut second = Client::connect(&ctx, &endpoint);
    second.send(&ping(2, "tcp://127.0.0.1:1"));
    let here = take(&mut server, &mut receiver);
    assert_ne!(gone, here, "a new connection has a new name");
    let pong = |id| Message::Pong {
        id: RequestId(id),
        boot: 0,
    };
    assert!(server.send(&gone, &pong(1), &mut sender).is_err());
    for stranger in ["tcp://x", "direct://", "direct://x.1", "direct://99.1"] {
        let to = Address::from(stranger);
        assert!(
            server.send(&to, &pong(1), &mut sender).is_err(),
            "{stranger}"
        );
    }
    server.send(&here, &pong(2), &mut sender).unwrap();
    let until = Instant::now() + WAIT;
    while second.answers.is_empty() {
        assert!(Instant::now() < until, "no answer");
        let mut items = [zmq::PollItem::from_fd(second.link.fd(), zmq::POLLIN)];
        zmq::poll(&mut items, 20).unwrap();
        second
            .link
            .receive(&mut second.rx, &mut second.answers)
            .unwrap();
    }
    assert_eq!(second.answers.pop_front(), Some(pong(2)));
    assert!(second.answers.is_empty(), "only its own answer");
}

#[test]
fn a_flood_of_requests_is_taken_a_window_at_a_time_and_every_one_answered() {
    let ctx = zmq::Context::new();
    let (mut driver, endpoint) = responder(&ctx);
    let mut client = Client::connect(&ctx, &endpoint);
    // More than the window of requests waiting for the role, in one go:
    // what is left in the socket must be read later without a new
    // readiness from it.
    let n = 3 * squall_transport::direct::MAX_TAKEN as u64 + 17;
    for id in 1..=n {
        client.send(&ping(id, "tcp://127.0.0.1:1"));
    }
    let mut answered = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    while (answered.len() as u64) < n {
        assert!(
            Instant::now() < until,
            "{} of {n} answered; the driver counted {:?}, the role answered {}",
            answered.len(),
            driver.stats(),
            driver.role().answered()
        );
        if let Some(Message::Pong { id, .. }) = client.answer(&mut driver) {
            answered.insert(id.0);
        }
        while let Some(msg) = client.answers.pop_front() {
            if let Message::Pong { id, .. } = msg {
                answered.insert(id.0);
            }
        }
    }
    assert_eq!(answered.len() as u64, n);
    assert_eq!(driver.role().answered(), n);
}

#[test]
fn a_send_to_a_thread_that_takes_nothing_gives_up_at_the_links_timeout() {
    // Bound and never polled: the connection is made by the kernel, and
    // its buffers fill.
    let server = DirectServer::bind(&Address::from("tcp://127.0.0.1:*")).unwrap();
    let mut link = DirectLink::connect(server.address(), Duration::from_millis(300)).unwrap();
    let mut frame = vec![0u8; 32 << 20];
    let started = Instant::now();
    let sent = link.send(&mut frame);
    assert!(sent.is_err(), "32 MiB cannot fit a connection nobody reads");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "gave up after {took:?}"
    );
}
