//! `squall ping`: protocol round trips over real ZeroMQ sockets.
//!
//! Without `--to`, a [`PingResponder`] runs on a thread of this process
//! behind its own [`ZmqDriver`], bound on the chosen transport, so the figure
//! is the messaging floor every KVS request sits on. With `--to`, any Squall
//! component's address is pinged (every role answers pings).

use anna::protocol::{Address, Message, RequestId};
use anna::role::{Driver, PingResponder};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use squall_transport::{Receiver, Sender, Shutdown, ZmqDriver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct PingArgs {
    /// Round trips to measure.
    #[arg(long, default_value_t = 10_000)]
    count: u32,
    /// Round trips before measuring, to warm sockets and caches.
    #[arg(long, default_value_t = 1_000)]
    warmup: u32,
    /// Transport of the in-process responder (ignored with `--to`).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Ping this address (e.g. `tcp://127.0.0.1:7000`) instead of starting a
    /// responder.
    #[arg(long)]
    to: Option<String>,
    /// How long to wait for each answer before giving up, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Tcp,
    Ipc,
    Inproc,
}

impl Transport {
    fn endpoints(self) -> (Address, Address) {
        let pid = std::process::id();
        match self {
            Transport::Tcp => ("tcp://127.0.0.1:*".into(), "tcp://127.0.0.1:*".into()),
            Transport::Ipc => (
                Address(format!("ipc:///tmp/squall-ping-{pid}-server")),
                Address(format!("ipc:///tmp/squall-ping-{pid}-client")),
            ),
            Transport::Inproc => ("inproc://ping-server".into(), "inproc://ping-client".into()),
        }
    }
}

struct Responder {
    stop: Shutdown,
    thread: JoinHandle<Result<u64>>,
}

fn start_responder(ctx: &zmq::Context, address: &Address) -> Result<(Address, Responder)> {
    let mut driver = ZmqDriver::bind(ctx, address, PingResponder::default())
        .context("starting the ping responder")?;
    let bound = driver.address().clone();
    let stop = driver.shutdown_handle();
    let thread = std::thread::spawn(move || {
        driver.run()?;
        Ok(driver.role().answered())
    });
    Ok((bound, Responder { stop, thread }))
}

pub fn run(args: &PingArgs) -> Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let ctx = zmq::Context::new();
    let (server_addr, client_addr) = args.transport.endpoints();
    let (target, responder) = match &args.to {
        Some(to) => (Address(to.clone()), None),
        None => {
            let (bound, r) = start_responder(&ctx, &server_addr)?;
            (bound, Some(r))
        }
    };
    let mut rx = Receiver::bind(&ctx, &client_addr).context("binding the reply socket")?;
    let mut tx = Sender::new(&ctx);
    let timeout = Duration::from_millis(args.timeout_ms);

    let mut samples = Vec::with_capacity(args.count as usize);
    for i in 0..(args.warmup + args.count) {
        let id = RequestId(u64::from(i));
        let started = Instant::now();
        let ping = Message::Ping {
            id,
            reply_to: rx.address().clone(),
        };
        tx.send(&target, &ping)?;
        loop {
            match rx.recv(Some(timeout.saturating_sub(started.elapsed())))? {
                Some(Message::Pong { id: got, .. }) if got == id => break,
                Some(_) => continue,
                None => bail!("no answer from {target} within {timeout:?} (ping {i})"),
            }
        }
        if i >= args.warmup {
            samples.push(started.elapsed());
        }
    }

    if let Some(r) = responder {
        r.stop.stop()?;
        let answered = r
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("responder thread panicked"))??;
        tracing::info!(answered, "responder stopped");
    }

    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let total: Duration = samples.iter().sum();
    println!("squall ping: {} round trips to {target}", samples.len());
    println!(
        "  p50 {:>8.1} µs   p99 {:>8.1} µs   max {:>8.1} µs   {:>8.0} round trips/s",
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        pct(1.0).as_secs_f64() * 1e6,
        samples.len() as f64 / total.as_secs_f64(),
    );
    Ok(())
}
