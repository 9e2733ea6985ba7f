//! One receiver, several endpoints: a cache takes executors' messages over
//! `ipc://` and the KVS's over `tcp://` on one socket and one driver.

use anna::protocol::{Address, Message, RequestId};
use anna::role::{Driver, PingResponder};
use squall_transport::{Receiver, Sender, ZmqDriver};
use std::time::Duration;

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn ping(id: u64, reply_to: &Address) -> Message {
    Message::Ping {
        id: RequestId(id),
        reply_to: reply_to.clone(),
    }
}

fn ipc_address(name: &str) -> Address {
    let path = std::env::temp_dir().join(format!("squall-{name}-{}.ipc", std::process::id()));
    Address(format!("ipc://{}", path.display()))
}

#[test]
fn a_receiver_bound_to_tcp_also_receives_on_ipc_and_inproc() {
    let ctx = zmq::Context::new();
    let mut rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let tcp = rx.address().clone();
    let ipc = rx.bind_also(&ipc_address("receiver")).unwrap();
    let inproc = rx.bind_also(&Address::from("inproc://bind-also")).unwrap();
    assert!(ipc.as_str().starts_with("ipc://"), "{ipc}");
    assert_eq!(rx.address(), &tcp, "the first endpoint stays the address");

    let mut tx = Sender::new(&ctx);
    for (id, to) in [&tcp, &ipc, &inproc].into_iter().enumerate() {
        tx.send(to, &ping(id as u64, &tcp)).unwrap();
        assert_eq!(rx.recv(WAIT).unwrap(), Some(ping(id as u64, &tcp)));
    }
    assert_eq!(rx.stats().received, 3);
}

#[test]
fn binding_a_taken_second_endpoint_is_an_error_naming_it() {
    let ctx = zmq::Context::new();
    let first = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
    let mut second = Receiver::bind(&ctx, &Address::from("inproc://bind-also-second")).unwrap();
    let err = second.bind_also(first.address()).err().unwrap();
    assert!(err.to_string().contains(first.address().as_str()), "{err}");
}

#[test]
fn a_driven_role_answers_on_its_second_endpoint() {
    let ctx = zmq::Context::new();
    let mut driver = ZmqDriver::bind(
        &ctx,
        &Address::from("tcp://127.0.0.1:*"),
        PingResponder::default(),
    )
    .unwrap();
    let ipc = driver.bind_also(&ipc_address("driver")).unwrap();
    let stop = driver.shutdown_handle();
    let thread = std::thread::spawn(move || {
        driver.run().unwrap();
        driver
    });

    let mut rx = Receiver::bind(&ctx, &Address::from("inproc://bind-also-client")).unwrap();
    let me = rx.address().clone();
    let mut tx = Sender::new(&ctx);
    tx.send(&ipc, &ping(7, &me)).unwrap();
    assert_eq!(
        rx.recv(WAIT).unwrap(),
        Some(Message::Pong {
            id: RequestId(7),
            boot: 0
        })
    );

    stop.stop().unwrap();
    let driver = thread.join().unwrap();
    assert_eq!(driver.role().answered(), 1);
}
