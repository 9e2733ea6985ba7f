//! [`run`]: the executor process's I/O thread.
//!
//! It binds the executor's PULL socket, starts the worker thread (which
//! sets up the embedded interpreter and the WebAssembly engine), and then loops: wait for a message, a
//! worker event or the core's next tick (never a zero-timeout poll), step
//! the [`ExecutorCore`], hand the worker its next job, send what the core
//! queued. It never touches the GIL, so reports flow while a function runs.
//!
//! When asked to stop, it sends `ExecutorLeaving` to every scheduler
//! ([`ExecutorCore::leave`]) before it returns, so they re-plan its calls
//! at once rather than after `executor_timeout`. Sends go through a ZeroMQ
//! context of their own, dropped as [`run`] returns: dropping it waits (up
//! to [`squall_transport::LINGER`]) until every queued frame has left, in
//! order, the goodbye last. The context of the receiving sockets cannot
//! promise that, because the worker thread, possibly still inside a
//! function, holds a socket of it.

use crate::config::ExecutorConfig;
use crate::core::{ExecutorCore, Identity};
use crate::route::CacheRoute;
use crate::runtime::python::{PythonPaths, PythonRuntime};
use crate::runtime::wasm::WasmRuntime;
use crate::runtime::{Ports, Runtime};
use crate::worker::{Mailbox, Outlet, Worker, WorkerEvent};
use anna::protocol::compute::UserMessage;
use anna::protocol::{self, Address, Message};
use anna::role::{Input, Outbox, Role, TransportStats};
use anna::time::Time;
use squall_transport::{Sender, DELIVERY_BATCH};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
use tracing::{debug, error, info};

/// The longest the loop sleeps before it looks at the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Who the executor is; from the command line.
#[derive(Clone, Debug, Default)]
pub struct ExecutorOptions {
    /// The address to bind (`tcp://host:port`; `tcp://host:*` picks a free
    /// port). The bound address is the executor's id.
    pub address: Address,
    /// The compute node it runs on.
    pub node: String,
    /// The node's cache.
    pub cache: Address,
    /// Schedulers to report to.
    pub schedulers: Vec<Address>,
    /// Extra site-packages directories, after the config's.
    pub python_path: Vec<PathBuf>,
}

/// Why [`run`] ended early.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot bind {address}: {source}")]
    Bind {
        address: Address,
        source: zmq::Error,
    },
    #[error("socket error: {0}")]
    Socket(#[from] zmq::Error),
    /// The embedded interpreter could not be set up (no `cloudpickle`, say).
    #[error("cannot start Python: {0}")]
    Python(String),
    /// A function did not return after its deadline and the grace: the
    /// worker thread is lost and the process must exit non-zero.
    #[error("a function is stuck past its deadline and grace; the executor must exit")]
    Stuck,
    /// The worker thread ended unexpectedly.
    #[error("the worker thread ended")]
    WorkerGone,
}

/// Runs an executor until `stop` is set (checked at least every 100 ms),
/// then tells its schedulers it is leaving.
///
/// Returns `Err` with an [`ExecutorError`] inside on a start-up failure and
/// on [`ExecutorError::Stuck`], after which the caller must exit the
/// process with a non-zero code (a thread of it holds the interpreter).
pub fn run(
    opts: ExecutorOptions,
    config: &ExecutorConfig,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    config.validate().map_err(ExecutorError::from)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ctx = zmq::Context::new();
    let inbox = ctx.socket(zmq::PULL)?;
    inbox.set_linger(0)?;
    inbox
        .bind(opts.address.as_str())
        .map_err(|source| ExecutorError::Bind {
            address: opts.address.clone(),
            source,
        })?;
    let address = match inbox.get_last_endpoint()? {
        Ok(endpoint) if !endpoint.is_empty() => Address(endpoint),
        _ => opts.address.clone(),
    };
    let wake_endpoint = format!(
        "inproc://squall-executor-wake-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let wake = ctx.socket(zmq::PULL)?;
    wake.set_linger(0)?;
    wake.bind(&wake_endpoint)?;

    let (events_tx, events) = mpsc::channel();
    let outlet = Arc::new(Outlet::connect(&ctx, &wake_endpoint, events_tx)?);
    let mailbox = Arc::new(Mailbox::new(config.mailbox_capacity));
    let mut extra = config.python_path.clone();
    extra.extend(opts.python_path.iter().cloned());
    let paths = PythonPaths::discover(extra);
    let jobs = start_worker(paths, config, mailbox.clone(), outlet)?;

    let id = Identity {
        address: address.clone(),
        node: opts.node.clone(),
        cache: opts.cache.clone(),
        schedulers: opts.schedulers.clone(),
        boot: squall_transport::clock::fresh_id("boot"),
    };
    info!(%address, node = %opts.node, cache = %opts.cache, "executor serving");
    let send_ctx = zmq::Context::new();
    let mut io = Io {
        core: ExecutorCore::new(config.clone(), id, squall_transport::clock::now()),
        sender: Sender::new(&send_ctx),
        outbox: Outbox::default(),
        received: TransportStats::default(),
        mailbox,
    };
    let result = io.serve(&inbox, &wake, &events, &jobs, &stop);
    if let Err(e) = &result {
        error!(error = %e, "executor stopped");
    }
    // Closes the sending sockets and waits until their frames have left.
    drop(io);
    drop(send_ctx);
    result.map_err(anyhow::Error::from)
}

fn start_worker(
    paths: PythonPaths,
    config: &ExecutorConfig,
    mailbox: Arc<Mailbox>,
    outlet: Arc<Outlet>,
) -> Result<mpsc::Sender<crate::job::Job>, ExecutorError> {
    let (jobs_tx, jobs_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (max_value_bytes, wasm_memory_bytes) = (config.max_value_bytes, config.wasm_memory_bytes);
    let python_memory_bytes = config.python_memory_bytes;
    thread::Builder::new()
        .name("squall-python".into())
        .spawn(move || {
            // The Python runtime first: the WebAssembly one uses the
            // `_squall_runtime` module it loads.
            let ports = Arc::new(Ports {
                route: CacheRoute::default(),
                mailbox,
                outlet: outlet.clone(),
            });
            let runtimes =
                PythonRuntime::start(&paths, max_value_bytes, python_memory_bytes, ports.clone())
                    .and_then(|python| {
                        let wasm = WasmRuntime::start(wasm_memory_bytes, ports.clone())?;
                        Ok(vec![
                            Box::new(python) as Box<dyn Runtime>,
                            Box::new(wasm) as Box<dyn Runtime>,
                        ])
                    });
            let runtimes = match runtimes {
                Ok(runtimes) => runtimes,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            Worker::new(runtimes, ports).serve(jobs_rx, &outlet);
        })
        .map_err(|e| ExecutorError::Python(format!("cannot spawn the worker: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(jobs_tx),
        Ok(Err(e)) => Err(ExecutorError::Python(e)),
        Err(_) => Err(ExecutorError::WorkerGone),
    }
}

struct Io {
    core: ExecutorCore,
    sender: Sender,
    outbox: Outbox,
    received: TransportStats,
    mailbox: Arc<Mailbox>,
}

impl Io {
    fn serve(
        &mut self,
        inbox: &zmq::Socket,
        wake: &zmq::Socket,
        events: &mpsc::Receiver<WorkerEvent>,
        jobs: &mpsc::Sender<crate::job::Job>,
        stop: &AtomicBool,
    ) -> Result<(), ExecutorError> {
        let mut frame = zmq::Message::new();
        while !stop.load(Ordering::Relaxed) {
            let now = squall_transport::clock::now();
            if self.core.next_tick().is_some_and(|due| due <= now) {
                self.step(now, Input::Tick);
            }
            if let Some(job) = self.core.next_job(now, &mut self.outbox) {
                jobs.send(job).map_err(|_| ExecutorError::WorkerGone)?;
            }
            self.flush();
            if self.core.is_stuck() {
                // The timeout error leaves as `run` drops the sending
                // context. No goodbye: the supervisor starts the process
                // again, and its new `boot` tells the schedulers.
                return Err(ExecutorError::Stuck);
            }
            let wait = (self.core.next_tick())
                .map(|due| due.saturating_since(squall_transport::clock::now()))
                .unwrap_or(STOP_CHECK)
                .min(STOP_CHECK);
            let (message, woken) = {
                let mut items = [
                    inbox.as_poll_item(zmq::POLLIN),
                    wake.as_poll_item(zmq::POLLIN),
                ];
                match zmq::poll(&mut items, wait.as_millis().max(1) as i64) {
                    // A signal cut the wait short; a stop request sets the
                    // flag this loop checks.
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                (items[0].is_readable(), items[1].is_readable())
            };
            if woken {
                while wake.recv(&mut frame, zmq::DONTWAIT).is_ok() {}
            }
            while let Ok(event) = events.try_recv() {
                self.on_event(event);
            }
            if message {
                self.receive(inbox, &mut frame)?;
            }
        }
        info!("executor stopping: telling the schedulers");
        self.core.leave(&mut self.outbox);
        self.flush();
        Ok(())
    }

    fn receive(&mut self, inbox: &zmq::Socket, frame: &mut zmq::Message) -> Result<(), zmq::Error> {
        for _ in 0..DELIVERY_BATCH {
            match inbox.recv(frame, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => break,
                Err(e) => return Err(e),
            }
            match protocol::decode(frame) {
                Ok(msg) => {
                    self.received.received += 1;
                    self.step(squall_transport::clock::now(), Input::Message(msg));
                }
                Err(error) => {
                    self.received.malformed += 1;
                    debug!(%error, "dropped malformed frame");
                }
            }
        }
        Ok(())
    }

    fn on_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Done(done) => {
                self.core
                    .job_done(squall_transport::clock::now(), done, &mut self.outbox);
            }
            WorkerEvent::Send { to, payload } => {
                let msg = Message::UserMessage(UserMessage {
                    from: self.core.identity().address.clone(),
                    payload,
                });
                self.outbox.send(to, msg);
            }
        }
    }

    fn step(&mut self, now: Time, input: Input) {
        let sent = self.sender.stats();
        self.core.observe_transport(TransportStats {
            sent: sent.sent,
            dropped: sent.dropped,
            ..self.received
        });
        self.core.step(now, input, &mut self.outbox);
        for msg in self.core.take_deliveries().collect::<Vec<_>>() {
            if !self.mailbox.push(msg.from, msg.payload) {
                self.core.count_mailbox_drop();
            }
        }
    }

    fn flush(&mut self) {
        for (to, msg) in self.outbox.drain() {
            if let Err(error) = self.sender.send(&to, &msg) {
                debug!(%to, kind = msg.kind(), %error, "message not sent");
            }
        }
    }
}
