//! End-to-end tests of the executor with a real embedded Python, over real
//! sockets: the test plays the scheduler, the cache and the caller on one
//! address, answers the executor's code fetches, and checks what comes
//! back. Functions are cloudpickled by a `python3` subprocess (the
//! virtualenv's), as a client would. The harness is in `common`.

mod common;

use anna::protocol::compute::{CallErrorKind, FunctionCode};
use anna::protocol::Message;
use common::{error, pickle, pickle_functions, repo, scratch, value, Harness};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

def mark(path):
    with open(path, "w") as f:
        f.write("ran")
    return "marked"

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

class Aged:
    def __init__(self):
        self.born = time.time()

    def __call__(self):
        return time.time() - self.born
"#;

/// Cloudpickles every function of [`FUNCTIONS`] in a separate interpreter.
fn registered() -> (HashMap<String, FunctionCode>, PathBuf) {
    let names = [
        "add", "boom", "spin", "nap", "inc", "mark", "tenfold", "talk", "Counter", "Aged",
    ];
    pickle_functions(FUNCTIONS, &names, &["Counter", "Aged"])
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
fn a_short_deadline_after_a_long_one_still_stops_a_loop_at_its_own_deadline() {
    // The watchdog sleeps until the deadline of the call it last saw and
    // is woken only for one ending sooner: this one must wake it.
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    assert_eq!(value(h.call("add", "((1, 2), {})", 600_000)), "3");
    let started = Instant::now();
    let e = error(h.call("spin", "((), {})", 700));
    assert_eq!(e.kind, CallErrorKind::Timeout, "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(value(h.call("add", "((20, 22), {})", 10_000)), "42");
}

#[test]
fn a_call_whose_deadline_passes_behind_a_long_one_never_starts() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    assert_eq!(value(h.call("nap", "((0.0,), {})", 10_000)), "'rested'");
    let path = scratch().join("marked");
    let _ = std::fs::remove_file(&path);
    let long = h.plan(
        vec![("nap", pickle("((1.0,), {})"), vec![], vec![])],
        10_000,
    );
    let args = format!("(({:?},), {{}})", path.display().to_string());
    let short = h.plan(vec![("mark", pickle(&args), vec![], vec![])], 300);
    h.invoke(&long, 0);
    h.invoke(&short, 0);
    // Both results, in whichever order they come.
    let mut results = HashMap::new();
    h.wait_for(Duration::from_secs(20), |m| match m {
        Message::CallResult(r) => {
            results.insert(r.id, r.outcome.clone());
            (results.len() == 2).then_some(())
        }
        _ => None,
    })
    .expect("both results");
    let e = error(results.remove(&short.id).unwrap());
    assert_eq!(e.kind, CallErrorKind::Timeout, "{e:?}");
    assert_eq!(value(results.remove(&long.id).unwrap()), "'rested'");
    assert!(!path.exists(), "the late call ran: {}", path.display());
    // A call in time behind nothing runs.
    let args = format!("(({:?},), {{}})", path.display().to_string());
    assert_eq!(value(h.call("mark", &args, 10_000)), "'marked'");
    assert!(path.exists());
}

#[test]
fn a_class_is_instantiated_once_and_serves_every_call() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    assert_eq!(value(h.call("Counter", "((), {})", 10_000)), "1");
    assert_eq!(value(h.call("Counter", "((), {})", 10_000)), "2");
}

#[test]
fn a_prewarmed_class_is_reported_warm_and_initialised_before_its_first_call() {
    let (functions, _) = registered();
    let mut h = Harness::start(functions, vec![]);
    let prewarm = Message::Prewarm {
        function: "Aged".into(),
    };
    h.tx.send(&h.executor, &prewarm).unwrap();
    let report = h
        .wait_for(Duration::from_secs(20), |m| match m {
            Message::ExecutorReport(r) if r.warm.iter().any(|f| f == "Aged") => Some(r.clone()),
            Message::CallResult(_) | Message::CallDone { .. } => panic!("no call runs: {m:?}"),
            _ => None,
        })
        .expect("a report listing the prewarmed function");
    assert!(report.calls.is_empty(), "{report:?}");
    // The initialiser ran at the prewarm: the instance the first call
    // finds is as old as the wait.
    h.wait_for(Duration::from_millis(500), |_| None::<()>);
    let age: f64 = value(h.call("Aged", "((), {})", 10_000)).parse().unwrap();
    assert!(age >= 0.3, "initialised only {age} s before the call");
    let later: f64 = value(h.call("Aged", "((), {})", 10_000)).parse().unwrap();
    assert!(later >= age, "the same instance serves the next call");
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
    h.put_bytes("k", pickle("41"));
    assert_eq!(value(h.call("add", args, 10_000)), "42");
}
