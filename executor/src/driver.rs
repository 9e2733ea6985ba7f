//! [`run`]: the executor process's I/O thread.
//!
//! It starts the worker thread (which sets up the embedded interpreter and
//! the WebAssembly engine) and drives the [`ExecutorCore`] with the
//! [`ZmqDriver`] every role runs under: wait for a message, a worker event
//! or the core's next tick (never a zero-timeout poll), step the core, hand
//! the worker its next job, send what the core queued. The worker wakes the
//! driver through an inproc socket ([`ZmqDriver::wake_on`]) after leaving
//! an event in a channel. The I/O thread never touches the GIL, so reports
//! flow while a function runs.
//!
//! When asked to stop, it sends `ExecutorLeaving` to every scheduler
//! ([`ExecutorCore::leave`], through [`ZmqDriver::act`]) before it returns,
//! so they re-plan its calls at once rather than after `executor_timeout`.
//! Sends go through a ZeroMQ context of their own
//! ([`ZmqDriver::send_through`]), dropped as [`run`] returns: dropping it
//! waits (up to [`squall_transport::LINGER`]) until every queued frame has
//! left, in order, the goodbye last. The context of the receiving sockets
//! cannot promise that, because the worker thread, possibly still inside a
//! function, holds a socket of it.

use crate::config::ExecutorConfig;
use crate::core::{ExecutorCore, Identity};
use crate::job::Job;
use crate::route::CacheRoute;
use crate::runtime::python::{PythonPaths, PythonRuntime};
use crate::runtime::wasm::WasmRuntime;
use crate::runtime::{Ports, Runtime};
use crate::worker::{Mailbox, Outlet, Worker, WorkerEvent};
use anna::protocol::compute::UserMessage;
use anna::protocol::{Address, Message};
use anna::role::{Driver, Input, Outbox, Role, TransportStats};
use anna::time::Time;
use squall_transport::{TransportError, ZmqDriver};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
use tracing::{error, info};

/// The longest the driver waits before [`run`] looks at the stop flag again.
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
    #[error(transparent)]
    Transport(#[from] TransportError),
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
    let send_ctx = zmq::Context::new();
    let (jobs, jobs_rx) = mpsc::channel();
    let (events_tx, events) = mpsc::channel();
    let mailbox = Arc::new(Mailbox::new(config.mailbox_capacity));
    let executor = |address: &Address| {
        let id = Identity {
            address: address.clone(),
            node: opts.node.clone(),
            cache: opts.cache.clone(),
            schedulers: opts.schedulers.clone(),
            boot: squall_transport::clock::fresh_id("boot"),
        };
        Executor {
            core: ExecutorCore::new(config.clone(), id, squall_transport::clock::now()),
            jobs,
            events,
            mailbox: mailbox.clone(),
            failed: None,
        }
    };
    let mut driver = ZmqDriver::bind_with(&ctx, &opts.address, executor).map_err(|e| match e {
        TransportError::Bind { address, source } => ExecutorError::Bind { address, source },
        other => ExecutorError::from(other),
    })?;
    driver.send_through(&send_ctx);
    let wake_endpoint = format!(
        "inproc://squall-executor-wake-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let wake = ctx.socket(zmq::PULL)?;
    wake.set_linger(0)?;
    wake.bind(&wake_endpoint)?;
    driver.wake_on(wake);

    let outlet = Arc::new(Outlet::connect(&ctx, &wake_endpoint, events_tx)?);
    let mut extra = config.python_path.clone();
    extra.extend(opts.python_path.iter().cloned());
    let paths = PythonPaths::discover(extra);
    start_worker(paths, config, mailbox, outlet, jobs_rx)?;

    let address = driver.address().clone();
    info!(%address, node = %opts.node, cache = %opts.cache, "executor serving");
    let result = serve(&mut driver, &stop);
    if let Err(e) = &result {
        error!(error = %e, "executor stopped");
    }
    // Closes the sending sockets and waits until their frames have left.
    drop(driver);
    drop(send_ctx);
    result.map_err(anyhow::Error::from)
}

/// Drives the executor until `stop` is set, then says goodbye; or until it
/// must end (a stuck function, the worker gone).
fn serve(driver: &mut ZmqDriver<Executor>, stop: &AtomicBool) -> Result<(), ExecutorError> {
    while !stop.load(Ordering::Relaxed) {
        driver.step(STOP_CHECK)?;
        if let Some(failed) = driver.role_mut().failed.take() {
            // A stuck function's timeout error has left with the step. No
            // goodbye: the supervisor starts the process again, and its
            // new `boot` tells the schedulers.
            return Err(failed);
        }
    }
    info!("executor stopping: telling the schedulers");
    driver.act(|executor, _, out| executor.core.leave(out));
    Ok(())
}

fn start_worker(
    paths: PythonPaths,
    config: &ExecutorConfig,
    mailbox: Arc<Mailbox>,
    outlet: Arc<Outlet>,
    jobs: mpsc::Receiver<Job>,
) -> Result<(), ExecutorError> {
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
            Worker::new(runtimes, ports).serve(jobs, &outlet);
        })
        .map_err(|e| ExecutorError::Python(format!("cannot spawn the worker: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ExecutorError::Python(e)),
        Err(_) => Err(ExecutorError::WorkerGone),
    }
}

/// The executor's role under the driver: its core, and the worker thread
/// it hands jobs to and hears events from.
struct Executor {
    core: ExecutorCore,
    jobs: mpsc::Sender<Job>,
    events: mpsc::Receiver<WorkerEvent>,
    mailbox: Arc<Mailbox>,
    /// Why the executor must end: a stuck function, or the worker gone.
    failed: Option<ExecutorError>,
}

impl Role for Executor {
    /// Takes up the worker's events first (a wake-up from the worker is an
    /// [`Input::Tick`], due or not), then the input (a tick only if the
    /// core's is due), then hands the worker jobs while it has room (see
    /// [`crate::core::WORKER_DEPTH`]).
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        while let Ok(event) = self.events.try_recv() {
            self.on_event(now, event, out);
        }
        match input {
            Input::Message(msg) => self.step_core(now, Input::Message(msg), out),
            Input::Tick if self.core.next_tick().is_some_and(|due| due <= now) => {
                self.step_core(now, Input::Tick, out)
            }
            Input::Tick => {}
        }
        while let Some(job) = self.core.next_job(now, out) {
            if self.jobs.send(job).is_err() {
                self.failed = Some(ExecutorError::WorkerGone);
                break;
            }
        }
        if self.core.is_stuck() {
            self.failed = Some(ExecutorError::Stuck);
        }
    }

    fn next_tick(&self) -> Option<Time> {
        self.core.next_tick()
    }

    fn observe_transport(&mut self, stats: TransportStats) {
        self.core.observe_transport(stats);
    }
}

impl Executor {
    fn on_event(&mut self, now: Time, event: WorkerEvent, out: &mut Outbox) {
        match event {
            WorkerEvent::Done(done) => self.core.job_done(now, done, out),
            WorkerEvent::Started { seq } => self.core.job_started(now, seq),
            WorkerEvent::Send { to, payload } => {
                let msg = Message::UserMessage(UserMessage {
                    from: self.core.identity().address.clone(),
                    payload,
                });
                out.send(to, msg);
            }
        }
    }

    /// Steps the core and puts the user messages it received in the
    /// mailbox `user.recv` reads.
    fn step_core(&mut self, now: Time, input: Input, out: &mut Outbox) {
        self.core.step(now, input, out);
        for msg in self.core.take_deliveries().collect::<Vec<_>>() {
            if !self.mailbox.push(msg.from, msg.payload) {
                self.core.count_mailbox_drop();
            }
        }
    }
}
