//! End-to-end tests of the executor with a real embedded Python, over real
//! sockets: the test plays the scheduler, the cache and the caller on one
//! address, answers the executor's code fetches, and checks what comes
//! back. Functions are cloudpickled by a `python3` subprocess (the
//! virtualenv's), as a client would.

use anna::lattice::{LatticeValue, Lww, Timestamp};
use anna::protocol::compute::{encode_value, function_key};
use anna::protocol::compute::{
    CallArgs, CallError, CallErrorKind, CallId, CallOutcome, ExecutorReport, FunctionCode, Plan,
    PlannedFunction, ReplyTo, Runtime,
};
use anna::protocol::{Address, KeyOp, KeyResult, KvsResponse, Message, Outcome};
use anna::transport::{Receiver, Sender};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use squall_executor::{run, ExecutorConfig, ExecutorOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FUNCTIONS: &str = r#"
import time

def add(a, b):
    return a + b

def boom(x):
    y = x - x
    return x / y

def spin():
    while True:
        pass

def nap(seconds):
    time.sleep(seconds)
    return "rested"

def inc(x):
    return x + 1

def tenfold(y):
    return y * 10

def talk():
    from squall import user
    me = user.executor_id()
    user.send(me, b"ping")
    sender, data = user.recv(timeout=2.0)
    return (sender == me, data, user.executor_of("talk") == me, user.id == me)

class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.calls
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "squall-executor-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Cloudpickles every function of [`FUNCTIONS`] in a separate interpreter.
fn registered() -> (HashMap<String, FunctionCode>, PathBuf) {
    let dir = scratch();
    let source = dir.join("functions.py");
    std::fs::write(&source, FUNCTIONS).unwrap();
    let script = format!(
        "import runpy, cloudpickle\n\
         ns = runpy.run_path({source:?}, run_name='__main__')\n\
         for name in ['add', 'boom', 'spin', 'nap', 'inc', 'tenfold', 'talk', 'Counter']:\n\
         \x20   print(name, cloudpickle.dumps(ns[name]).hex())\n",
        source = source.display().to_string()
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
            is_class: name == "Counter",
            export: String::new(),
            result: anna::protocol::compute::ValueKind::Bytes,
        };
        functions.insert(name.to_string(), code);
    }
    (functions, source)
}

/// `pickle.dumps(eval(expr))` in this process's interpreter.
fn pickle(expr: &str) -> Vec<u8> {
    Python::attach(|py| {
        let code = std::ffi::CString::new(format!("__import__('pickle').dumps({expr})")).unwrap();
        let bytes = py.eval(&code, None, None).unwrap();
        bytes.cast::<PyBytes>().unwrap().as_bytes().to_vec()
    })
}

/// `repr(pickle.loads(bytes))`.
fn unpickle(bytes: &[u8]) -> String {
    Python::attach(|py| {
        let value = py
            .import("pickle")
            .unwrap()
            .call_method1("loads", (PyBytes::new(py, bytes),))
            .unwrap();
        value.repr().unwrap().to_string()
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A function of a test plan: name, pickled arguments, upstream, downstream.
type Step<'a> = (&'a str, Vec<u8>, Vec<u16>, Vec<u16>);

struct Harness {
    rx: Receiver,
    tx: Sender,
    executor: Address,
    functions: HashMap<String, FunctionCode>,
    /// Data keys the test's "cache" holds, as last-writer-wins bytes.
    values: HashMap<String, Vec<u8>>,
    reports: Vec<ExecutorReport>,
    seq: u64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    fn start(functions: HashMap<String, FunctionCode>, python_path: Vec<PathBuf>) -> Self {
        let ctx = zmq::Context::new();
        let rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).unwrap();
        let me = rx.address().clone();
        let config = ExecutorConfig {
            report_period: Duration::from_millis(50),
            ..ExecutorConfig::default()
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
        let mut h = Harness {
            rx,
            tx: Sender::new(&ctx),
            executor: Address::default(),
            functions,
            values: HashMap::new(),
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
    fn wait_for<T>(
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
                Message::KvsRequest(req) => self.answer(req),
                Message::ExecutorReport(r) => self.reports.push(r.clone()),
                _ => {}
            }
            if let Some(t) = f(&msg) {
                return Some(t);
            }
        }
        None
    }

    fn answer(&mut self, req: &anna::protocol::KvsRequest) {
        let results = (req.ops.iter())
            .map(|op| {
                let outcome = match op {
                    KeyOp::Get { key } => (self.functions.iter())
                        .find(|(name, _)| function_key(name) == *key)
                        .map(|(_, code)| {
                            let lww = Lww::new(Timestamp::default(), encode_value(code));
                            Outcome::Value(LatticeValue::Lww(lww))
                        })
                        .or_else(|| {
                            let bytes = self.values.get(key)?.clone();
                            let lww = Lww::new(Timestamp::default(), bytes);
                            Some(Outcome::Value(LatticeValue::Lww(lww)))
                        })
                        .unwrap_or(Outcome::NotFound),
                    _ => Outcome::Stored,
                };
                KeyResult {
                    key: op.key().clone(),
                    outcome,
                }
            })
            .collect();
        let response = Message::KvsResponse(KvsResponse {
            id: req.id,
            results,
        });
        self.tx.send(&req.reply_to, &response).unwrap();
    }

    fn plan(&mut self, functions: Vec<Step<'_>>, timeout_ms: u64) -> Plan {
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
        }
    }

    fn invoke(&mut self, plan: &Plan, function: u16) {
        let msg = Message::Invoke {
            plan: Box::new(plan.clone()),
            function,
        };
        self.tx.send(&self.executor, &msg).unwrap();
    }

    fn result(&mut self, plan: &Plan) -> CallOutcome {
        let id = plan.id;
        self.wait_for(Duration::from_secs(20), |m| match m {
            Message::CallResult(r) if r.id == id => Some(r.outcome.clone()),
            _ => None,
        })
        .expect("a call result")
    }

    fn call(&mut self, name: &str, args: &str, timeout_ms: u64) -> CallOutcome {
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

fn value(outcome: CallOutcome) -> String {
    match outcome {
        CallOutcome::Value(bytes) => unpickle(&bytes),
        CallOutcome::Error(e) => panic!("call failed: {e:?}"),
    }
}

fn error(outcome: CallOutcome) -> CallError {
    match outcome {
        CallOutcome::Error(e) => e,
        CallOutcome::Value(v) => panic!("call succeeded: {}", unpickle(&v)),
    }
}

#[test]
fn a_function_call_returns_its_result_to_the_caller_and_tells_the_scheduler() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    let plan = h.plan(
        vec![("add", pickle("((2, 3), {})"), vec![], vec![])],
        10_000,
    );
    h.invoke(&plan, 0);
    let mut result = None;
    let mut done = None;
    h.wait_for(Duration::from_secs(20), |m| {
        match m {
            Message::CallResult(r) => result = Some(r.outcome.clone()),
            Message::CallDone { failed, .. } => done = Some(*failed),
            _ => {}
        }
        (result.is_some() && done.is_some()).then_some(())
    });
    assert_eq!(value(result.expect("a result")), "5");
    assert_eq!(done, Some(false));
    assert_eq!(value(h.call("add", "(('a',), {'b': 'b'})", 10_000)), "'ab'");
}

#[test]
fn a_raising_function_fails_with_a_remote_error_and_its_traceback() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    let e = error(h.call("boom", "((1,), {})", 10_000));
    assert_eq!(e.kind, CallErrorKind::Remote);
    assert_eq!(e.type_name, "ZeroDivisionError");
    assert_eq!(e.function.as_deref(), Some("boom"));
    // cloudpickle 3.1 names the file of pickled code `<dynamic-code>`;
    // the line number and function name survive.
    assert!(e.traceback.contains("line 9, in boom"), "{}", e.traceback);
    assert!(
        !e.traceback.contains("_runtime"),
        "no runtime frames: {}",
        e.traceback
    );
    assert_eq!(
        value(h.call("add", "((1, 1), {})", 10_000)),
        "2",
        "the next call is served"
    );
    let bad = error(h.call("add", "'not a tuple'", 10_000));
    assert_eq!(bad.kind, CallErrorKind::BadArguments);
    let unknown = error(h.call("nope", "((), {})", 10_000));
    assert_eq!(unknown.kind, CallErrorKind::UnknownFunction);
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline_and_the_next_call_is_served() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    let started = Instant::now();
    let e = error(h.call("spin", "((), {})", 700));
    assert_eq!(e.kind, CallErrorKind::Timeout, "{e:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(value(h.call("add", "((20, 22), {})", 10_000)), "42");
}

#[test]
fn a_class_is_instantiated_once_and_serves_every_call() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    assert_eq!(value(h.call("Counter", "((), {})", 10_000)), "1");
    assert_eq!(value(h.call("Counter", "((), {})", 10_000)), "2");
}

#[test]
fn a_two_function_dag_hands_the_result_downstream_on_one_executor() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    let plan = h.plan(
        vec![
            ("inc", pickle("((5,), {})"), vec![], vec![1]),
            ("tenfold", Vec::new(), vec![0], vec![]),
        ],
        10_000,
    );
    h.invoke(&plan, 0);
    let mut dones = Vec::new();
    let id = plan.id;
    let outcome = h
        .wait_for(Duration::from_secs(20), |m| match m {
            Message::CallDone {
                function, failed, ..
            } => {
                dones.push((*function, *failed));
                None
            }
            Message::CallResult(r) if r.id == id => Some(r.outcome.clone()),
            _ => None,
        })
        .expect("a result");
    assert_eq!(value(outcome), "60");
    h.wait_for(Duration::from_millis(500), |m| {
        if let Message::CallDone {
            function, failed, ..
        } = m
        {
            dones.push((*function, *failed));
        }
        (dones.len() >= 2).then_some(())
    });
    dones.sort();
    assert_eq!(dones, vec![(0, false), (1, false)]);
}

#[test]
fn reports_keep_flowing_while_a_function_runs() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    let plan = h.plan(
        vec![("nap", pickle("((1.0,), {})"), vec![], vec![])],
        10_000,
    );
    h.invoke(&plan, 0);
    let before = h.reports.len();
    let window = Instant::now();
    h.wait_for(Duration::from_millis(700), |_| None::<()>);
    let during: Vec<_> = h.reports[before..].to_vec();
    assert!(window.elapsed() >= Duration::from_millis(650));
    assert!(during.len() >= 8, "only {} reports in 700 ms", during.len());
    assert!(during.iter().any(|r| r.busy_permille > 900), "{during:?}");
    assert_eq!(value(h.result(&plan)), "'rested'");
}

#[test]
fn the_user_library_sends_and_receives_messages_and_names_executors() {
    let (functions, _) = registered();
    // The virtualenv's `squall` (the client package) comes first on the
    // path; where it is not installed, this stand-in holding only the user
    // library serves.
    let shim = scratch();
    std::fs::create_dir_all(shim.join("squall")).unwrap();
    std::fs::write(shim.join("squall/__init__.py"), "").unwrap();
    std::fs::copy(
        repo().join("client-py/python/squall/user.py"),
        shim.join("squall/user.py"),
    )
    .unwrap();
    let mut h = Harness::start(functions, vec![shim]);
    assert_eq!(
        value(h.call("talk", "((), {})", 10_000)),
        "(True, b'ping', True, True)"
    );
}

#[test]
fn a_reference_argument_is_replaced_by_the_keys_value_read_through_the_cache() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    // `squall` (the client package) is importable once the executor has
    // added the virtualenv to the shared interpreter's path.
    let args = "((__import__('squall.reference').reference.Reference('k'),), {'b': 1})";
    let e = error(h.call("add", args, 300));
    assert_eq!(e.kind, CallErrorKind::Timeout);
    assert!(e.message.contains("reference 'k' did not appear"), "{e:?}");
    h.values.insert("k".into(), pickle("41"));
    assert_eq!(value(h.call("add", args, 10_000)), "42");
}
