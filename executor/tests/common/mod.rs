//! The harness of the executor's end-to-end tests: over real sockets the
//! test plays the scheduler, the cache and the caller on one address,
//! answers the executor's code fetches and key reads and writes through
//! the compute tier's KVS double (`anna::sim::KvsDouble`, a real storage
//! thread), and checks what comes back.
#![allow(dead_code)]

use anna::lattice::{LatticeValue, Lww, Timestamp};
use anna::protocol::compute::{encode_value, function_key};
use anna::protocol::compute::{
    CallArgs, CallError, CallId, CallOutcome, ExecutorReport, FunctionCode, Plan, PlannedFunction,
    ReplyTo, Runtime, ValueKind,
};
use anna::protocol::{Address, Message};
use anna::sim::KvsDouble;
use anna::time::Time;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use squall_executor::{run, ExecutorConfig, ExecutorOptions};
use squall_transport::{Receiver, Sender};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "squall-executor-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Cloudpickles the functions `names` of the Python `source` in a separate
/// interpreter (the virtualenv's), as a client would; those in `classes`
/// are registered as classes. Returns them and the source's path.
pub fn pickle_functions(
    source: &str,
    names: &[&str],
    classes: &[&str],
) -> (HashMap<String, FunctionCode>, PathBuf) {
    let dir = scratch();
    let path = dir.join("functions.py");
    std::fs::write(&path, source).unwrap();
    let script = format!(
        "import runpy, cloudpickle\n\
         ns = runpy.run_path({source:?}, run_name='__main__')\n\
         for name in {names:?}:\n\
         \x20   print(name, cloudpickle.dumps(ns[name]).hex())\n",
        source = path.display().to_string()
    );
    let python = repo().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .output()
        .expect("the virtualenv's python (make setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut functions = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (name, hex) = line.split_once(' ').unwrap();
        let code = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let code = FunctionCode {
            runtime: Runtime::Python,
            code,
            is_class: classes.contains(&name),
            export: String::new(),
            result: ValueKind::Bytes,
        };
        functions.insert(name.to_string(), code);
    }
    (functions, path)
}

/// `pickle.dumps(eval(expr))` in this process's interpreter.
pub fn pickle(expr: &str) -> Vec<u8> {
    Python::attach(|py| {
        let code = std::ffi::CString::new(format!("__import__('pickle').dumps({expr})")).unwrap();
        let bytes = py.eval(&code, None, None).unwrap();
        bytes.cast::<PyBytes>().unwrap().as_bytes().to_vec()
    })
}

/// `repr(pickle.loads(bytes))`.
pub fn unpickle(bytes: &[u8]) -> String {
    Python::attach(|py| {
        let value = py
            .import("pickle")
            .unwrap()
            .call_method1("loads", (PyBytes::new(py, bytes),))
            .unwrap();
        value.repr().unwrap().to_string()
    })
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A function of a test plan: name, pickled arguments, upstream, downstream.
pub type Step<'a> = (&'a str, Vec<u8>, Vec<u16>, Vec<u16>);

pub struct Harness {
    pub rx: Receiver,
    pub tx: Sender,
    pub executor: Address,
    pub functions: HashMap<String, FunctionCode>,
    /// The test's "cache": the compute tier's KVS double, holding the
    /// registered functions and the data keys.
    pub kvs: KvsDouble,
    pub reports: Vec<ExecutorReport>,
    pub seq: u64,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    pub fn start(functions: HashMap<String, FunctionCode>, python_path: Vec<PathBuf>) -> Self {
        Self::start_with(functions, python_path, ExecutorConfig::default())
    }

    /// [`Harness::start`] with `config` (its `report_period` made short).
    pub fn start_with(
        functions: HashMap<String, FunctionCode>,
        python_path: Vec<PathBuf>,
        config: ExecutorConfig,
    ) -> Self {
        let ctx = zmq::Context::new();
        let rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
        let me = rx.address().clone();
        let config = ExecutorConfig {
            report_period: Duration::from_millis(50),
            ..config
        };
        let opts = ExecutorOptions {
            address: "tcp://127.0.0.1:*".into(),
            node: "node-1".into(),
            cache: me.clone(),
            schedulers: vec![me.clone()],
            python_path,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let theirs = stop.clone();
        let thread = std::thread::spawn(move || run(opts, &config, theirs));
        let mut kvs = KvsDouble::new(me.clone());
        for (name, code) in &functions {
            let lww = Lww::new(Timestamp::default(), encode_value(code));
            kvs.put(&function_key(name), LatticeValue::Lww(lww));
        }
        let mut h = Harness {
            rx,
            tx: Sender::new(&ctx),
            executor: Address::default(),
            functions,
            kvs,
            reports: Vec::new(),
            seq: 0,
            stop,
            thread: Some(thread),
        };
        let end = Instant::now() + Duration::from_secs(30);
        while h.reports.is_empty() && Instant::now() < end {
            if h.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = h.thread.take().map(|t| t.join());
                panic!("the executor ended: {result:?}");
            }
            h.wait_for(Duration::from_millis(100), |_| None::<()>);
        }
        h.executor = h.reports.first().expect("a first report").executor.clone();
        h
    }

    /// Pumps messages (answering code fetches, recording reports) until `f`
    /// picks one or `timeout` passes.
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&Message) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Some(msg) = self.rx.recv(Some(left)).unwrap() else {
                break;
            };
            match &msg {
                Message::KvsRequest(_) => {
                    let now = Time::from_micros(now_ms() * 1000);
                    let to_me = (self.rx.address().clone(), msg.clone());
                    if let Some((to, reply)) = self.kvs.answer(now, &to_me) {
                        self.tx.send(&to, &reply).unwrap();
                    }
                }
                Message::ExecutorReport(r) => self.reports.push(r.clone()),
                _ => {}
            }
            if let Some(t) = f(&msg) {
                return Some(t);
            }
        }
        None
    }

    /// Stores `bytes` under `key` as last-writer-wins (a data key a
    /// function reads).
    pub fn put_bytes(&mut self, key: &str, bytes: Vec<u8>) {
        let ts = Timestamp {
            wall_ms: now_ms(),
            ..Timestamp::default()
        };
        self.kvs.put(key, LatticeValue::Lww(Lww::new(ts, bytes)));
    }

    /// The last-writer-wins bytes stored under `key`.
    pub fn stored_bytes(&self, key: &str) -> Option<Vec<u8>> {
        match self.kvs.state(key)?.value()? {
            LatticeValue::Lww(l) => Some(l.value().to_vec()),
            _ => None,
        }
    }

    pub fn plan(&mut self, functions: Vec<Step<'_>>, timeout_ms: u64) -> Plan {
        self.seq += 1;
        Plan {
            id: CallId {
                caller: 1,
                seq: self.seq,
            },
            dag: None,
            functions: (functions.into_iter())
                .map(|(name, payload, upstream, downstream)| PlannedFunction {
                    name: name.into(),
                    executor: self.executor.clone(),
                    args: CallArgs {
                        payload,
                        refs: vec![],
                    },
                    upstream,
                    downstream,
                })
                .collect(),
            reply: ReplyTo {
                address: self.rx.address().clone(),
                response_key: None,
            },
            deadline_ms: now_ms() + timeout_ms,
            attempt: 0,
            scheduler: self.rx.address().clone(),
            session: Default::default(),
            written: Default::default(),
            consistency: Default::default(),
            pinned: Default::default(),
            output: Vec::new(),
            instance: None,
            trace: None,
        }
    }

    pub fn invoke(&mut self, plan: &Plan, function: u16) {
        let msg = Message::Invoke {
            plan: Box::new(plan.clone()),
            function,
        };
        self.tx.send(&self.executor, &msg).unwrap();
    }

    pub fn result(&mut self, plan: &Plan) -> CallOutcome {
        let id = plan.id;
        self.wait_for(Duration::from_secs(20), |m| match m {
            Message::CallResult(r) if r.id == id => Some(r.outcome.clone()),
            _ => None,
        })
        .expect("a call result")
    }

    pub fn call(&mut self, name: &str, args: &str, timeout_ms: u64) -> CallOutcome {
        let plan = self.plan(vec![(name, pickle(args), vec![], vec![])], timeout_ms);
        self.invoke(&plan, 0);
        self.result(&plan)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn value(outcome: CallOutcome) -> String {
    match outcome {
        CallOutcome::Value(bytes) => unpickle(&bytes),
        CallOutcome::Error(e) => panic!("call failed: {e:?}"),
    }
}

pub fn error(outcome: CallOutcome) -> CallError {
    match outcome {
        CallOutcome::Error(e) => e,
        CallOutcome::Value(v) => panic!("call succeeded: {}", unpickle(&v)),
    }
}
