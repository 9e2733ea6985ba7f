//! Batches on real sockets: what a driven role queues for one address in
//! one step leaves in one frame and arrives message by message, in order;
//! a batch that could not have come from a driver is dropped and counted.

use anna::protocol::{Address, Membership, Message, NodeId, RequestId};
use anna::role::{Driver, Input, Outbox, Role};
use anna::time::Time;
use squall_transport::{Receiver, Sender, ZmqDriver};
use std::time::Duration;

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn pong(id: u64, boot: u64) -> Message {
    Message::Pong {
        id: RequestId(id),
        boot,
    }
}

fn depart(incarnation: u64) -> Message {
    Message::Membership(Membership::Depart {
        node: NodeId(9),
        incarnation,
    })
}

/// Answers a ping with four messages to its sender (a node's own message,
/// which travels alone, third) and one to `other`.
struct Fanout {
    other: Address,
}

impl Role for Fanout {
    fn step(&mut self, _now: Time, input: Input, out: &mut Outbox) {
        let Input::Message(Message::Ping { id, reply_to }) = input else {
            return;
        };
        out.send(reply_to.clone(), pong(id.0, 1));
        out.send(self.other.clone(), pong(id.0, 4));
        out.send(reply_to.clone(), pong(id.0, 2));
        out.send(reply_to.clone(), depart(id.0));
        out.send(reply_to, pong(id.0, 3));
    }

    fn next_tick(&self) -> Option<Time> {
        None
    }
}

#[test]
fn what_a_step_queues_for_one_address_leaves_in_one_frame_and_arrives_in_order() {
    let ctx = zmq::Context::new();
    let mut rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let mut other = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let fanout = Fanout {
        other: other.address().clone(),
    };
    let mut driver = ZmqDriver::bind(&ctx, &Address::from("tcp://127.0.0.1:*"), fanout).unwrap();
    let server = driver.address().clone();
    let stop = driver.shutdown_handle();
    let thread = std::thread::spawn(move || {
        driver.run().unwrap();
        driver
    });
    let mut tx = Sender::new(&ctx);
    let me = rx.address().clone();
    for id in 0..10 {
        tx.send(
            &server,
            &Message::Ping {
                id: RequestId(id),
                reply_to: me.clone(),
            },
        )
        .unwrap();
        for want in [pong(id, 1), pong(id, 2), depart(id), pong(id, 3)] {
            assert_eq!(rx.recv(WAIT).unwrap(), Some(want));
        }
        assert_eq!(other.recv(WAIT).unwrap(), Some(pong(id, 4)));
    }
    stop.stop().unwrap();
    let driver = thread.join().unwrap();
    // Per ping: [pong 1, pong 2] in one frame, the departure alone, pong 3
    // (which may not overtake it) alone, and pong 4 to the other address.
    assert_eq!(driver.stats().sent, 10 * 4);
    assert_eq!(rx.stats().received, 10 * 4);
    assert_eq!(other.stats().received, 10);
}

#[test]
fn a_batch_holding_a_batch_or_a_nodes_own_message_is_dropped_and_counted() {
    let ctx = zmq::Context::new();
    let mut rx = Receiver::bind(&ctx, &Address::from("inproc://batches")).unwrap();
    let mut tx = Sender::new(&ctx);
    let to = rx.address().clone();
    let nested = Message::Batch(vec![pong(1, 1), Message::Batch(vec![pong(2, 2)])]);
    tx.send(&to, &nested).unwrap();
    tx.send(&to, &Message::Batch(vec![pong(3, 3), depart(3)]))
        .unwrap();
    tx.send(&to, &Message::Batch(vec![pong(4, 4), pong(5, 5)]))
        .unwrap();
    assert_eq!(rx.recv(WAIT).unwrap(), Some(pong(4, 4)));
    assert_eq!(rx.recv(WAIT).unwrap(), Some(pong(5, 5)));
    assert_eq!(rx.recv(Some(Duration::from_millis(50))).unwrap(), None);
    let stats = rx.stats();
    assert_eq!((stats.received, stats.malformed), (2, 2));
}
