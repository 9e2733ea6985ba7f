//! The worker thread: runs [`Job`]s one at a time through a [`Runtime`]
//! (a load-only job of a prewarm stops after loading the code; a call of a
//! coroutine function is only started, [`WorkerEvent::Started`]), and the
//! [`Mailbox`] that `user.recv` reads.
//!
//! The I/O thread sends jobs over a channel; the worker answers through an
//! [`Outlet`]: a channel of [`WorkerEvent`]s plus a one-byte wake-up on an
//! inproc socket the I/O thread polls beside its own.

use crate::job::{call_error, Job, JobDone};
use crate::runtime::{CallInput, Ports, Runtime};
use anna::protocol::compute::{self, CallErrorKind};
use anna::protocol::Address;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the worker tells the I/O thread.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A job finished (or a coroutine the worker started).
    Done(JobDone),
    /// Job `seq` started as a coroutine on the event loop; its `Done`
    /// comes later. The worker is free.
    Started { seq: u64 },
    /// A function called `user.send(to, payload)`.
    Send { to: Address, payload: Vec<u8> },
}

/// The worker's way back to the I/O thread.
pub struct Outlet {
    events: mpsc::Sender<WorkerEvent>,
    wake: Mutex<zmq::Socket>,
}

impl Outlet {
    /// An outlet that wakes the I/O thread at inproc `endpoint`.
    pub fn connect(
        ctx: &zmq::Context,
        endpoint: &str,
        events: mpsc::Sender<WorkerEvent>,
    ) -> Result<Self, zmq::Error> {
        let wake = ctx.socket(zmq::PUSH)?;
        wake.set_linger(0)?;
        wake.connect(endpoint)?;
        Ok(Outlet {
            events,
            wake: Mutex::new(wake),
        })
    }

    /// Hands `event` to the I/O thread and wakes it.
    pub fn send(&self, event: WorkerEvent) {
        if self.events.send(event).is_ok() {
            let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
            // A full wake queue means the I/O thread is awake anyway.
            let _ = wake.send(&[][..], zmq::DONTWAIT);
        }
    }
}

/// User messages waiting for `user.recv`, bounded.
pub struct Mailbox {
    queue: Mutex<VecDeque<(Address, Vec<u8>)>>,
    arrived: Condvar,
    capacity: usize,
}

impl Mailbox {
    /// An empty mailbox holding at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
            capacity,
        }
    }

    /// Adds a message; `false` (dropped) if the mailbox is full.
    pub fn push(&self, from: Address, payload: Vec<u8>) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= self.capacity {
            return false;
        }
        queue.push_back((from, payload));
        self.arrived.notify_one();
        true
    }

    /// The oldest message, waiting at most `wait` for one.
    pub fn recv(&self, wait: Duration) -> Option<(Address, Vec<u8>)> {
        let deadline = Instant::now() + wait;
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(msg) = queue.pop_front() {
                return Some(msg);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            queue = self
                .arrived
                .wait_timeout(queue, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Runs jobs on the runtimes it holds, loading code when its generation
/// changed.
pub struct Worker {
    runtimes: Vec<Box<dyn Runtime>>,
    ports: Arc<Ports>,
    loaded: HashMap<String, u64>,
}

impl Worker {
    /// A worker over `runtimes` (one per kind of code), whose functions
    /// reach the world through `ports`.
    pub fn new(runtimes: Vec<Box<dyn Runtime>>, ports: Arc<Ports>) -> Self {
        Worker {
            runtimes,
            ports,
            loaded: HashMap::new(),
        }
    }

    /// Runs one job to its end, or starts it as a coroutine (`Started`).
    pub fn run(&mut self, job: &Job) -> WorkerEvent {
        for name in &job.evict {
            if self.loaded.remove(name).is_some() {
                self.runtimes.iter_mut().for_each(|r| r.unload(name));
            }
        }
        if !job.stale_values.is_empty() {
            for runtime in &mut self.runtimes {
                runtime.forget_values(&job.stale_values);
            }
        }
        self.ports.route.begin(&job.env);
        let outcome = self.call(job);
        let started = matches!(outcome, Ok(None));
        let outcome = outcome.map(Option::unwrap_or_default);
        let mut effects = self.ports.route.end();
        for runtime in &mut self.runtimes {
            let extras = runtime.take_output();
            effects.output.push_str(&extras.output);
            effects.kept_reads += extras.kept_reads;
            effects.reads.bytes += extras.kept_bytes;
        }
        // A later call reads a key the function wrote anew, not a
        // referenced value kept from before the write.
        let written: Vec<String> = (effects.written.entries().iter())
            .map(|(k, _)| k.clone())
            .collect();
        if !written.is_empty() {
            for runtime in &mut self.runtimes {
                runtime.forget_values(&written);
            }
        }
        if started {
            return WorkerEvent::Started { seq: job.seq };
        }
        WorkerEvent::Done(JobDone {
            seq: job.seq,
            outcome,
            effects,
        })
    }

    /// The call's result; `None`: started as a coroutine.
    fn call(&mut self, job: &Job) -> Result<Option<Vec<u8>>, anna::protocol::compute::CallError> {
        let name = job.function.as_str();
        let Some(runtime) = self
            .runtimes
            .iter_mut()
            .find(|r| r.kind() == job.code.runtime)
        else {
            return Err(call_error(
                CallErrorKind::BadFunction,
                "BadFunction",
                format!("this executor has no {:?} runtime", job.code.runtime),
                name,
            ));
        };
        if self.loaded.get(name) != Some(&job.generation) {
            self.loaded.remove(name);
            runtime.load(name, &job.code, &job.env)?;
            self.loaded.insert(name.to_string(), job.generation);
        }
        if job.load_only {
            return Ok(Some(Vec::new()));
        }
        // Handed to the worker before the job ahead of it ended (see
        // `core::MIN_HANDED`), a call may reach here past its deadline: it
        // never starts, as one past its deadline in the queue never did.
        if squall_transport::clock::now().as_millis() >= job.deadline_ms {
            return Err(call_error(
                CallErrorKind::Timeout,
                "Timeout",
                format!(
                    "call {} of {name} waited for the worker past its deadline",
                    job.env.call
                ),
                name,
            ));
        }
        if job.env.instance.is_some() && job.code.runtime != compute::Runtime::Python {
            return Err(call_error(
                CallErrorKind::BadFunction,
                "TypeError",
                format!("{name} is not a Python class: it has no named instances"),
                name,
            ));
        }
        let input = CallInput {
            payload: &job.payload,
            upstream: &job.upstream,
            env: &job.env,
        };
        // A named instance's methods run as plain calls.
        if job.env.instance.is_none() && runtime.is_async(name) {
            return runtime.start(name, input, job.seq).map(|()| None);
        }
        runtime.invoke(name, input).map(Some)
    }

    /// Serves jobs until the channel closes.
    pub fn serve(mut self, jobs: mpsc::Receiver<Job>, outlet: &Outlet) {
        while let Ok(job) = jobs.recv() {
            outlet.send(self.run(&job));
        }
    }
}
