//! A driver woken from another thread of the process, and a goodbye sent
//! between steps through a context of its own: what the executor's I/O
//! thread needs of `ZmqDriver`.

use anna::protocol::{Address, Message, RequestId};
use anna::role::{Driver, Input, Outbox, Role, Step};
use anna::time::Time;
use squall_transport::{Receiver, ZmqDriver};
use std::time::Duration;

/// Counts its ticks; knows the address it was bound at.
struct Woken {
    me: Address,
    ticks: u32,
}

impl Role for Woken {
    fn step(&mut self, _now: Time, input: Input, _out: &mut Outbox) {
        if input == Input::Tick {
            self.ticks += 1;
        }
    }

    fn next_tick(&self) -> Option<Time> {
        None
    }
}

#[test]
fn a_wake_up_frame_hands_the_role_one_tick_and_a_goodbye_leaves_before_its_context_closes() {
    let ctx = zmq::Context::new();
    let any = Address::from("tcp://127.0.0.1:*");
    let mut driver = ZmqDriver::bind_with(&ctx, &any, |me| Woken {
        me: me.clone(),
        ticks: 0,
    })
    .unwrap();
    assert_eq!(
        &driver.role().me,
        driver.address(),
        "built knowing its port"
    );
    let wake = ctx.socket(zmq::PULL).unwrap();
    wake.bind("inproc://transport-wake").unwrap();
    driver.wake_on(wake);
    let waker = ctx.socket(zmq::PUSH).unwrap();
    waker.connect("inproc://transport-wake").unwrap();

    let short = Duration::from_millis(20);
    assert_eq!(driver.step(short).unwrap(), Step::Idle);
    waker.send(&[][..], 0).unwrap();
    waker.send(&[][..], 0).unwrap();
    assert_eq!(driver.step(Duration::from_secs(5)).unwrap(), Step::Ticked);
    assert_eq!(driver.role().ticks, 1, "every frame queued, one tick");
    assert_eq!(driver.step(short).unwrap(), Step::Idle);
    assert_eq!(driver.role().ticks, 1);

    let mut rx = Receiver::bind(&ctx, &any).unwrap();
    let to = rx.address().clone();
    let send_ctx = zmq::Context::new();
    driver.send_through(&send_ctx);
    let goodbye = Message::Ping {
        id: RequestId(9),
        reply_to: driver.address().clone(),
    };
    let sent = goodbye.clone();
    driver.act(move |_, _, out| out.send(to, sent));
    drop(driver);
    drop(send_ctx);
    assert_eq!(
        rx.recv(Some(Duration::from_secs(5))).unwrap(),
        Some(goodbye)
    );
}
