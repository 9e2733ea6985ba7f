//! The Python memory cap (`[executor] python_memory_bytes`), end to end
//! with a real embedded Python: functions that allocate far past a small
//! cap fail with an error naming it, and the same executor serves the next
//! call. One test in its own binary: the cap is per process.

mod common;

use anna::protocol::compute::CallErrorKind;
use common::{error, pickle_functions, value, Harness};
use squall_executor::runtime::python_memory;
use squall_executor::ExecutorConfig;

const CAP: usize = 64 << 20;

const FUNCTIONS: &str = r#"
def hog_bytes():
    b = bytearray(1 << 30)
    return len(b)

def hog_list():
    xs = []
    while True:
        xs.append(str(len(xs)) * 20)

def hog_cycle():
    xs = []
    try:
        while True:
            xs.append(str(len(xs)) * 20)
    except MemoryError as e:
        err = e  # the frame holds the exception, which holds the frame
        raise

def hog_result():
    return bytes(40 << 20)

def careful():
    try:
        bytearray(1 << 30)
    except MemoryError:
        return "caught"

def moderate(n):
    return len(bytearray(n))

class Greedy:
    def __init__(self):
        self.data = bytearray(1 << 30)

    def __call__(self):
        return len(self.data)
"#;

#[test]
fn functions_past_the_python_memory_cap_fail_naming_it_and_the_executor_serves_on() {
    let names = [
        "hog_bytes",
        "hog_list",
        "hog_cycle",
        "hog_result",
        "careful",
        "moderate",
        "Greedy",
    ];
    let (functions, _) = pickle_functions(FUNCTIONS, &names, &["Greedy"]);
    let config = ExecutorConfig {
        python_memory_bytes: CAP,
        max_value_bytes: 16 << 20,
        ..ExecutorConfig::default()
    };
    let mut h = Harness::start_with(functions, vec![], config);
    assert!(
        python_memory::enforced(),
        "the cap is installed and counting"
    );
    let baseline = python_memory::used();
    assert!(
        baseline < (CAP / 2) as isize,
        "the interpreter starts well below the cap: {baseline}"
    );

    let over = |h: &mut Harness, name: &str| {
        let e = error(h.call(name, "((), {})", 20_000));
        assert_eq!(e.kind, CallErrorKind::Remote, "{name}: {e:?}");
        assert_eq!(e.type_name, "MemoryError", "{name}: {e:?}");
        assert_eq!(
            e.message,
            format!(
                "{name} exceeded the executor's Python memory cap of {CAP} bytes \
                 ([executor] python_memory_bytes)"
            )
        );
        let used = python_memory::used();
        assert!(
            used < baseline + (8 << 20),
            "{name}: the memory came back ({used} bytes counted, {baseline} at start)"
        );
        assert_eq!(
            value(h.call("moderate", "((1000,), {})", 20_000)),
            "1000",
            "after {name} the next call is served"
        );
        e
    };
    let e = over(&mut h, "hog_bytes");
    assert!(e.traceback.contains("in hog_bytes"), "{}", e.traceback);
    over(&mut h, "hog_list");
    over(&mut h, "hog_cycle");
    over(&mut h, "hog_result");
    over(&mut h, "Greedy");

    // Under the cap nothing changes; a function may catch MemoryError.
    assert_eq!(
        value(h.call("moderate", &format!("(({},), {{}})", 16 << 20), 20_000)),
        (16 << 20).to_string()
    );
    assert_eq!(value(h.call("careful", "((), {})", 20_000)), "'caught'");
    for _ in 0..3 {
        over(&mut h, "hog_list");
    }
}
