//! Messages of the compute tier: calls, DAG plans, results, executor and
//! cache reports, key subscriptions, and messages between running functions.
//!
//! # How a call travels
//!
//! 1. A client sends [`CallRequest`] (one function) or [`DagCallRequest`]
//!    (a registered DAG) to a scheduler.
//! 2. The scheduler assigns every function of the call to an executor once
//!    and writes the assignment into a [`Plan`]. A single call is a plan of
//!    one function. It sends [`Message::Invoke`] with the plan to the
//!    executor of every source function (one with no upstream).
//! 3. An executor runs its function. If the function has downstream
//!    functions, it sends each of their executors a [`Message::Trigger`]
//!    carrying the plan and the result; a function with several upstream
//!    functions runs once it holds a trigger from each, its upstream results
//!    first in the order of [`PlannedFunction::upstream`]. A sink function's
//!    result goes to the caller as [`Message::CallResult`] (and, with a
//!    response key, into the KVS). Executors send [`Message::CallDone`] to
//!    the scheduler for its bookkeeping; nothing else of the call passes
//!    through the scheduler.
//! 4. Every executor sends [`Message::ExecutorReport`] to the schedulers
//!    every report period; a silent executor is declared dead, and its
//!    in-flight plans are re-planned under the same [`CallId`] (at-least-once,
//!    bounded) or failed (at-most-once).
//!
//! Payloads are opaque bytes in the encoding of the function's runtime: for
//! Python, arguments are `cloudpickle.dumps((args, kwargs))` and results
//! `cloudpickle.dumps(result)`.
//!
//! # Keys the compute tier uses in the KVS
//!
//! See [`function_key`], [`dag_key`], [`traffic_key`], [`FUNCTIONS_KEY`],
//! [`DAGS_KEY`]. A function key holds a last-writer-wins value whose bytes
//! are a bincode-encoded [`FunctionCode`]; a DAG key one whose bytes are a
//! bincode-encoded [`Dag`]; a traffic key one whose bytes are a
//! bincode-encoded [`Traffic`] (all with [`encode_value`]).

use super::{Address, Key, Session};
use crate::lattice::{KeyState, Lattice};
use serde::{Deserialize, Serialize};

/// Prefix of every key the compute tier keeps in the KVS.
pub const SYSTEM_PREFIX: &str = "__squall/";

/// The set (a set lattice of names) of every function ever registered;
/// a name whose [`function_key`] is deleted is no longer registered.
pub const FUNCTIONS_KEY: &str = "__squall/functions";

/// The set of every DAG name ever registered; see [`FUNCTIONS_KEY`].
pub const DAGS_KEY: &str = "__squall/dags";

/// The KVS key of function `name`'s code.
pub fn function_key(name: &str) -> Key {
    format!("{SYSTEM_PREFIX}fn/{name}")
}

/// The KVS key of DAG `name`'s definition.
pub fn dag_key(name: &str) -> Key {
    format!("{SYSTEM_PREFIX}dag/{name}")
}

/// The KVS key of function `name`'s traffic split (a [`Traffic`]): calls
/// of the plain name that go to other versions than the current one.
pub fn traffic_key(name: &str) -> Key {
    format!("{SYSTEM_PREFIX}traffic/{name}")
}

/// Encodes a compute-tier record ([`FunctionCode`], [`Dag`], [`Traffic`]) for storage as
/// a KVS value: bincode, standard config, as on the wire.
pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("compute-tier records always encode")
}

/// Decodes a record stored by [`encode_value`]; `None` if the bytes are not
/// one (a corrupt or foreign value).
pub fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let config = bincode::config::standard().with_limit::<{ super::MAX_FRAME_BYTES }>();
    match bincode::serde::decode_from_slice(bytes, config) {
        Ok((value, used)) if used == bytes.len() => Some(value),
        _ => None,
    }
}

/// Which runtime runs a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Runtime {
    /// A cloudpickled Python callable, run in an embedded CPython.
    Python,
    /// A WebAssembly module (the WebAssembly issue).
    Wasm,
}

/// A registered function as stored under its [`function_key`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCode {
    pub runtime: Runtime,
    /// Python: `cloudpickle.dumps(fn_or_class)`. WebAssembly: the module.
    #[serde(with = "serde_bytes")]
    pub code: Vec<u8>,
    /// Python: the code is a class, instantiated once per executor; calls
    /// go to its `__call__` (or `run`). WebAssembly: unused.
    pub is_class: bool,
    /// WebAssembly: the export to call. Python: unused.
    pub export: String,
    /// WebAssembly: how the bytes the function returns reach a Python
    /// caller (or a Python function downstream). Python: unused.
    pub result: ValueKind,
}

/// How WebAssembly functions' bytes map to Python values: arguments are
/// converted to bytes by their Python type, results from bytes by the kind
/// the function was registered with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueKind {
    /// `bytes` as they are.
    #[default]
    Bytes,
    /// `str`, as UTF-8.
    Str,
    /// `int`, as 8 bytes, little-endian two's complement.
    Int,
    /// `float`, as 8 bytes, little-endian IEEE 754.
    Float,
}

/// A DAG as registered: functions and the edges between them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dag {
    pub name: String,
    /// Registered function names; each appears once.
    pub functions: Vec<String>,
    /// `(upstream, downstream)` edges. A function with several upstream
    /// functions receives their results in the order the edges are listed.
    pub connections: Vec<(String, String)>,
}

/// Parts of a million that [`Traffic`] weights count in.
pub const TRAFFIC_PARTS: u32 = 1_000_000;

/// A canary split of a function's calls, as stored under its
/// [`traffic_key`]: each listed version gets its weight of the calls of the
/// plain name; the rest go to the current version (the plain name's code).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// `(version, weight)`, the weight in parts of [`TRAFFIC_PARTS`]; the
    /// weights add up to at most [`TRAFFIC_PARTS`] (a record whose weights
    /// add up to more serves its versions in order until the parts run out).
    pub versions: Vec<(u32, u32)>,
}

impl Traffic {
    /// The version call `id` goes to, if the split sends it to one: a hash
    /// of the id placed on the versions' cumulative weights. The same id
    /// always picks the same version (a retried call runs the version its
    /// first attempt ran), and ids spread over the versions by weight.
    pub fn pick(&self, id: CallId) -> Option<u32> {
        let point = split_mix(id.caller ^ split_mix(id.seq)) % u64::from(TRAFFIC_PARTS);
        let mut upto = 0u64;
        for &(version, weight) in &self.versions {
            upto += u64::from(weight);
            if point < upto {
                return Some(version);
            }
        }
        None
    }
}

/// The SplitMix64 finaliser: nearby inputs land far apart.
fn split_mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One call, unique per caller; every retry of the call keeps it, so an
/// answer can be matched and a duplicate ignored.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct CallId {
    /// Unique per caller (a client's writer id).
    pub caller: u64,
    /// Unique per call of that caller.
    pub seq: u64,
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.caller, self.seq)
    }
}

/// How consistent the reads of one call are, chosen per call (Cloudburst's
/// levels). Whatever the level, a call reads at least what its caller
/// wrote (see [`crate::protocol::session`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Each read sees the key's state at a replica or cache at that
    /// moment: the default, and the cheapest.
    #[default]
    Lww,
    /// Every function of one call that reads key K sees the same version
    /// of K: the one the call's first read of K got. The version read
    /// travels with the call ([`Plan::pinned`]) to the functions
    /// downstream.
    RepeatableRead,
    /// Repeatable read, and the reads form a causal cut: a read of a
    /// multi-key causal value makes every later read of a key it depends on
    /// (in this function and downstream) at least at that dependency, and
    /// a multi-key causal write with no dependencies given depends on every
    /// causal value the call read.
    Causal,
}

impl Consistency {
    /// The name users give it (`"lww"`, `"repeatable_read"`).
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Lww => "lww",
            Consistency::RepeatableRead => "repeatable_read",
            Consistency::Causal => "causal",
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Consistency::Lww,
            Consistency::RepeatableRead,
            Consistency::Causal,
        ]
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| {
            format!(
                "unknown consistency level {s:?}: use \"lww\", \"repeatable_read\" or \"causal\""
            )
        })
    }
}

/// What a function is given by its caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallArgs {
    /// Arguments in the runtime's encoding (Python: cloudpickled
    /// `(args, kwargs)`), references included as `squall.Reference` objects.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The KVS keys the payload references: the executor resolves them
    /// through its node's cache, and the scheduler places the call where
    /// they are cached.
    pub refs: Vec<Key>,
}

/// Where a call's result goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The caller's address: it gets a [`Message::CallResult`].
    pub address: Address,
    /// If set, the result (a [`CallOutcome`] encoded with [`encode_value`])
    /// is also stored under this key as last-writer-wins, for a future to
    /// read later.
    pub response_key: Option<Key>,
}

/// "Call this function", to a scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    pub id: CallId,
    pub function: String,
    pub args: CallArgs,
    pub reply: ReplyTo,
    /// The whole call fails with [`CallErrorKind::Timeout`] after this long.
    pub timeout_ms: u32,
    /// The versions the caller wrote: every read the call makes sees at
    /// least them (see [`crate::protocol::session`]).
    pub session: Session,
    pub consistency: Consistency,
    /// A call of a method of the named instance of class `function`
    /// whose state is kept under this key ([`instance_key`]): every call
    /// of it goes to one executor (while the executors stay the same),
    /// which runs them one at a time.
    pub instance: Option<Key>,
    /// Return where the call spent its time with its result
    /// ([`CallResult::trace`]).
    pub trace: bool,
}

/// The KVS key of the state of instance `name` of class `class`.
pub fn instance_key(class: &str, name: &str) -> Key {
    format!("{SYSTEM_PREFIX}instance/{class}/{name}")
}

/// "Call this DAG", to a scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DagCallRequest {
    pub id: CallId,
    pub dag: String,
    /// Arguments of individual functions by name; a function not listed
    /// gets none beyond its upstream results.
    pub args: Vec<(String, CallArgs)>,
    pub reply: ReplyTo,
    pub timeout_ms: u32,
    /// See [`CallRequest::session`]; the DAG record is read at least at it.
    pub session: Session,
    pub consistency: Consistency,
    /// See [`CallRequest::trace`].
    pub trace: bool,
}

/// One function of a [`Plan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFunction {
    pub name: String,
    /// The executor that runs it in this call.
    pub executor: Address,
    /// Its own arguments; upstream results come before them.
    pub args: CallArgs,
    /// Indexes (into [`Plan::functions`]) of the functions whose results it
    /// takes, in the order it takes them.
    pub upstream: Vec<u16>,
    /// Indexes of the functions its result goes to.
    pub downstream: Vec<u16>,
}

/// A call as the scheduler placed it. It travels with the call from
/// executor to executor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub id: CallId,
    /// The DAG's name, or `None` for a single call.
    pub dag: Option<String>,
    pub functions: Vec<PlannedFunction>,
    pub reply: ReplyTo,
    /// Wall-clock milliseconds (since the Unix epoch) after which the call
    /// has failed with a timeout.
    pub deadline_ms: u64,
    /// 0 for the first attempt; a re-plan after an executor died counts up.
    pub attempt: u32,
    /// The scheduler that made the plan: [`Message::CallDone`] goes there.
    pub scheduler: Address,
    /// The caller's session: code and values are read at least at it.
    pub session: Session,
    /// What the functions of this call upstream of the receiver wrote
    /// (witnesses): read at least at it too, and reported to the caller
    /// with the result.
    pub written: Session,
    pub consistency: Consistency,
    /// Under [`Consistency::RepeatableRead`]: the whole state of every key
    /// a function upstream of the receiver read, as it read it (the first
    /// read of a key wins): the receiver's reads of those keys answer it.
    pub pinned: Session,
    /// What the functions of this call upstream of the receiver printed
    /// (nothing printed: no entry), in the order they finished; the caller
    /// gets it with the result.
    pub output: Vec<CallOutput>,
    /// A single call of a method of a named instance: its state's key
    /// (see [`CallRequest::instance`]).
    pub instance: Option<Key>,
    /// Where the call spent its time so far, when its caller asked.
    pub trace: Option<Box<CallTrace>>,
}

/// Where one call spent its time: returned with its result when the
/// caller asked ([`CallRequest::trace`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTrace {
    /// When the scheduler received the call (microseconds since the Unix
    /// epoch, the scheduler's clock).
    pub arrived_us: u64,
    /// How long it waited in the scheduler's queue for a free executor.
    pub queued_us: u64,
    /// One per function of the call, in the plan's order.
    pub steps: Vec<TraceStep>,
}

/// One function of a traced call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    pub function: String,
    /// The executor that ran it.
    pub executor: Address,
    /// Why the scheduler placed it there.
    pub placed: String,
    /// Time in the executor's queue (and fetching its code), microseconds.
    pub waited_us: u64,
    /// Time it ran, microseconds.
    pub ran_us: u64,
    /// Its reads through the node's cache, how many the cache answered from
    /// what it held, and the bytes they returned.
    pub reads: u32,
    pub cache_hits: u32,
    /// Reads of `Reference` arguments the executor's kept values answered
    /// (not in `reads`; their bytes are in `bytes_read`).
    pub kept_reads: u32,
    pub bytes_read: u64,
    /// Whether it has finished (the other fields are final).
    pub done: bool,
}

/// What one function of a call wrote to its stdout and stderr (its
/// `logging` records included), for the call's caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOutput {
    pub function: String,
    pub text: String,
}

impl Plan {
    /// The version of `key` a function of this call must read at least:
    /// what its caller wrote joined with what upstream functions wrote.
    pub fn version(&self, key: &str) -> Option<KeyState> {
        match (self.session.get(key), self.written.get(key)) {
            (None, None) => None,
            (Some(v), None) | (None, Some(v)) => Some(v.clone()),
            (Some(a), Some(b)) => Some(a.clone().join(b.clone())),
        }
    }

    /// Indexes of the functions with no upstream function: where the call
    /// starts.
    pub fn sources(&self) -> impl Iterator<Item = u16> + '_ {
        self.functions
            .iter()
            .enumerate()
            .filter(|(_, f)| f.upstream.is_empty())
            .map(|(i, _)| i as u16)
    }
}

/// Why a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallErrorKind {
    /// The function raised (or a WebAssembly function trapped).
    Remote,
    /// No function is registered under the name.
    UnknownFunction,
    /// No DAG is registered under the name.
    UnknownDag,
    /// The arguments could not be decoded or do not fit the function.
    BadArguments,
    /// The stored function could not be loaded (a corrupt pickle, say).
    BadFunction,
    /// The call did not finish before its deadline (a function still
    /// running, a reference that never appeared, no executor free).
    Timeout,
    /// The executor running the call died and the call was not retried
    /// (at-most-once mode, or retries exhausted).
    ExecutorDied,
    /// No executor could take the call and the scheduler's queue is full.
    Overloaded,
    /// An argument or the function's result is larger than `[limits]
    /// max_value_bytes`: refused where it was made, at once.
    TooLarge,
    /// No scheduler answered: the caller's own verdict, never sent by a
    /// scheduler.
    Unavailable,
    /// The client's key lacks the `call` right.
    PermissionDenied,
}

/// A failed call, as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    pub kind: CallErrorKind,
    /// The remote exception's type name (`ZeroDivisionError`), or a short
    /// name of the failure for other kinds.
    pub type_name: String,
    pub message: String,
    /// The remote traceback, formatted; empty where there is none.
    pub traceback: String,
    /// The function that failed, if one did.
    pub function: Option<String>,
}

/// A call's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallOutcome {
    /// The sink function's result, in the runtime's encoding.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Error(CallError),
}

/// A call's result, to the caller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallResult {
    pub id: CallId,
    pub outcome: CallOutcome,
    /// What the call's functions wrote (witnesses): the caller's session
    /// records them, so its later reads and calls see them.
    pub written: Session,
    /// What the call's functions printed (see [`Plan::output`]).
    pub output: Vec<CallOutput>,
    /// Where the call spent its time, if its caller asked.
    pub trace: Option<Box<CallTrace>>,
}

/// What an executor tells the schedulers every report period. It is also
/// the executor's heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorReport {
    /// The executor's address (its id).
    pub executor: Address,
    /// The compute node it runs on (executors of one node share a cache).
    pub node: String,
    /// Its node's cache.
    pub cache: Address,
    /// Fraction of the last period spent running functions, in thousandths.
    pub busy_permille: u16,
    /// Invocations waiting to run.
    pub queue: u32,
    /// Functions loaded and warm.
    pub warm: Vec<String>,
    /// Calls completed per function since the executor started.
    pub calls: Vec<(String, u64)>,
    /// A number fresh at every start of the executor's process: a report
    /// from a known address with another `boot` means the process that had
    /// calls in flight died and was started again.
    pub boot: u64,
    /// Calls that failed here since the executor started, by error kind
    /// (`Remote`: the function raised; `Timeout`, `TooLarge`, ...).
    pub errors: Vec<(String, u64)>,
    /// Coroutines (calls of `async def` functions) in flight, awaiting on
    /// the executor's event loop: they do not hold its worker.
    pub async_running: u32,
    /// How many may be in flight at once (`[executor] max_async_calls`).
    pub async_limit: u32,
    /// The warm functions that are coroutine functions, sorted.
    pub async_functions: Vec<String>,
}

/// What a cache tells the schedulers every report period: the keys it
/// holds, with their approximate sizes in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    pub node: String,
    pub cache: Address,
    pub keys: Vec<(Key, u64)>,
    /// Reads answered from the cache, and reads that had to go to the KVS,
    /// since the cache started.
    pub hits: u64,
    pub misses: u64,
    /// The cache's own KVS operations (misses, writes through): latency
    /// per kind, retries, failures. Boxed: its three histograms would
    /// make every `Message` half a kilobyte larger.
    pub kvs: Box<super::figures::KvsFigures>,
}

/// A DAG definition changed (registered again or deleted): schedulers drop
/// what they cached of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DagChanged {
    pub name: String,
}

/// "Push me every change of these keys for the next `lease_ms`", to a
/// key's owner threads (from a cache) or to a cache (from an executor).
/// Changes arrive as [`crate::protocol::Gossip`] at `subscriber`. Renew
/// before the lease ends; a lapsed subscription costs the owner nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    pub subscriber: Address,
    pub keys: Vec<Key>,
    pub lease_ms: u32,
}

/// The set of every trigger name ever registered; a name whose
/// [`trigger_key`] is deleted is no longer registered (as
/// [`FUNCTIONS_KEY`]).
pub const TRIGGERS_KEY: &str = "__squall/triggers";

/// The KVS key of trigger `name`'s registration (a last-writer-wins value
/// whose bytes are a bincode-encoded [`TriggerSpec`]).
pub fn trigger_key(name: &str) -> Key {
    format!("{SYSTEM_PREFIX}trigger/{name}")
}

/// Which change of a key a trigger fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A write that changed the key's value.
    Put,
    /// A delete of a key that held a value.
    Delete,
}

impl ChangeKind {
    /// `"put"` or `"delete"`, as users name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Put => "put",
            ChangeKind::Delete => "delete",
        }
    }
}

/// A registered trigger: `function` runs once per change of `on` kind of
/// a key starting with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerSpec {
    pub name: String,
    pub function: String,
    pub prefix: Key,
    pub on: ChangeKind,
}

/// "Send me the changes of keys under `prefix` for trigger `trigger`
/// until `lease_ms` from now", from a scheduler to every storage thread.
/// Renewed before the lease ends; the thread answers [`WatchState`]. Each
/// change goes to one live watcher of its trigger, as [`Changes`], and is
/// kept until a watcher says it is done ([`Message::ChangesDone`]), sent
/// again to a live watcher every `retry_ms` until then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub watcher: Address,
    pub trigger: TriggerSpec,
    pub lease_ms: u32,
    pub retry_ms: u32,
}

/// One change of a key, for a trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The storage thread's number for it, unique at that thread: what
    /// [`Message::ChangesDone`] names.
    pub seq: u64,
    pub trigger: String,
    pub key: Key,
    pub kind: ChangeKind,
    /// The write's timestamp (a last-writer-wins value's own, a delete's),
    /// else the storage thread's clock: a change delivered twice, or by two
    /// replicas, carries the same one.
    pub at: crate::lattice::Timestamp,
    /// The key's value after a put, encoded with [`encode_value`]; empty
    /// for a delete.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// Changes for a watcher, from the storage thread `from`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    pub from: Address,
    pub events: Vec<ChangeEvent>,
}

/// A storage thread's answer to a [`Watch`]: how many changes of the
/// trigger it holds (not yet done) and how many it dropped (its backlog
/// full) since it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    pub from: Address,
    pub trigger: String,
    pub backlog: u64,
    pub dropped: u64,
}

/// A message from one running function to another executor, for
/// `squall.user.send` / `recv`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMessage {
    /// The sending executor.
    pub from: Address,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// What a scheduler knows of the compute tier, the answer to
/// [`crate::protocol::Message::ComputeStatusRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeStatus {
    pub executors: Vec<ExecutorReport>,
    pub caches: Vec<CacheReport>,
    /// Calls in flight and waiting in the scheduler's queue.
    pub in_flight: u32,
    pub queued: u32,
    /// The scheduler's latency histograms and error counts.
    pub calls: super::figures::CallFigures,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_records_round_trip_and_foreign_bytes_are_refused() {
        let code = FunctionCode {
            runtime: Runtime::Python,
            code: vec![0x80, 5, 0x95],
            is_class: true,
            export: String::new(),
            result: ValueKind::Bytes,
        };
        let bytes = encode_value(&code);
        assert_eq!(decode_value::<FunctionCode>(&bytes), Some(code));
        let dag = Dag {
            name: "d".to_string(),
            functions: vec!["a".to_string(), "b".to_string()],
            connections: vec![("a".to_string(), "b".to_string())],
        };
        assert_eq!(decode_value::<Dag>(&encode_value(&dag)), Some(dag.clone()));

        let mut trailing = encode_value(&dag);
        trailing.push(0);
        assert_eq!(decode_value::<Dag>(&trailing), None);
        assert_eq!(decode_value::<FunctionCode>(b"not a record"), None);
        assert_eq!(decode_value::<FunctionCode>(&[]), None);
    }

    #[test]
    fn system_keys_share_one_prefix() {
        for key in [
            function_key("f"),
            dag_key("d"),
            traffic_key("f"),
            FUNCTIONS_KEY.to_string(),
            DAGS_KEY.to_string(),
            TRIGGERS_KEY.to_string(),
            trigger_key("t"),
        ] {
            assert!(key.starts_with(SYSTEM_PREFIX), "{key}");
        }
        assert_ne!(function_key("x"), dag_key("x"));
        assert_ne!(function_key("x"), traffic_key("x"));
    }

    #[test]
    fn a_split_picks_by_weight_and_the_same_call_always_alike() {
        let split = Traffic {
            versions: vec![(1, TRAFFIC_PARTS / 10), (3, TRAFFIC_PARTS / 5)],
        };
        assert_eq!(
            decode_value::<Traffic>(&encode_value(&split)),
            Some(split.clone())
        );
        let (mut one, mut three, mut rest) = (0, 0, 0);
        for seq in 0..20_000 {
            let id = CallId {
                caller: 0xfeed,
                seq,
            };
            let picked = split.pick(id);
            assert_eq!(picked, split.pick(id), "deterministic");
            match picked {
                Some(1) => one += 1,
                Some(3) => three += 1,
                None => rest += 1,
                other => panic!("picked {other:?}"),
            }
        }
        // 2,000 and 4,000 expected; a binomial sd is ~42 and ~57.
        assert!((1_800..2_200).contains(&one), "{one}");
        assert!((3_700..4_300).contains(&three), "{three}");
        assert_eq!(one + three + rest, 20_000);
        assert_eq!(Traffic::default().pick(CallId::default()), None);
        let all = Traffic {
            versions: vec![(2, TRAFFIC_PARTS)],
        };
        assert!((0..100).all(|seq| all.pick(CallId { caller: 9, seq }) == Some(2)));
    }

    #[test]
    fn sources_are_the_functions_without_upstream() {
        let f = |upstream: Vec<u16>| PlannedFunction {
            name: String::new(),
            executor: Address::default(),
            args: CallArgs::default(),
            upstream,
            downstream: Vec::new(),
        };
        let plan = Plan {
            id: CallId::default(),
            dag: None,
            functions: vec![f(vec![]), f(vec![0]), f(vec![]), f(vec![0, 2])],
            reply: ReplyTo {
                address: Address::default(),
                response_key: None,
            },
            deadline_ms: 0,
            attempt: 0,
            scheduler: Address::default(),
            session: Session::default(),
            written: Session::default(),
            consistency: Consistency::Lww,
            pinned: Session::default(),
            output: Vec::new(),
            instance: None,
            trace: None,
        };
        assert_eq!(plan.sources().collect::<Vec<_>>(), vec![0, 2]);
    }
}
