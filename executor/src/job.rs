//! What the I/O thread hands the worker thread, and what comes back.
//!
//! A job is a call, or, for a prewarm, only the loading of a function's
//! code ([`Job::load_only`]): the same step a first call takes, a class's
//! initialiser included, with nothing invoked.

use anna::lattice::WriterId;
use anna::protocol::compute::{CallError, CallErrorKind, CallId, Consistency, FunctionCode};
use anna::protocol::{Address, Session};
use std::sync::Arc;

/// One function to run (or only load), from
/// [`crate::ExecutorCore::next_job`].
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Matches the [`JobDone`]; unique per executor.
    pub seq: u64,
    /// The function's registered name.
    pub function: String,
    /// Its code, as fetched from the cache.
    pub code: Arc<FunctionCode>,
    /// Changes whenever the code was fetched again: a runtime holding an
    /// older generation loaded reloads it.
    pub generation: u64,
    /// The caller's arguments in the runtime's encoding (empty: none).
    pub payload: Vec<u8>,
    /// Upstream results, in the order of `PlannedFunction::upstream`.
    pub upstream: Vec<Vec<u8>>,
    /// Wall-clock milliseconds after which the call has timed out.
    pub deadline_ms: u64,
    /// What the user library needs to know of the call.
    pub env: CallEnv,
    /// Functions dropped from the warm set since the last job: the runtime
    /// unloads them first.
    pub evict: Vec<String>,
    /// Referenced keys whose kept values are stale (the key changed, or the
    /// executor stopped watching it) since the last job: the runtime drops
    /// them first.
    pub stale_values: Vec<String>,
    /// Load the code (running a class's initialiser) and call nothing: a
    /// prewarm. Its [`JobDone`] carries an empty result or the load's
    /// error. `payload` and `upstream` are empty.
    pub load_only: bool,
}

/// The call's surroundings, as `squall.user` sees them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallEnv {
    /// This executor's address (its id).
    pub executor: Address,
    /// The node's cache.
    pub cache: Address,
    /// The executor of every function of the current plan, by name.
    pub peers: Vec<(String, Address)>,
    /// Wall-clock milliseconds after which the call has timed out.
    pub deadline_ms: u64,
    /// The caller's session: `squall.user.get` and `Reference` arguments
    /// read at least at its versions.
    pub session: Session,
    /// The call's consistency level, and (repeatable read) the states
    /// upstream functions read, which this function's reads of those keys
    /// answer.
    pub consistency: Consistency,
    pub pinned: Session,
    /// Who the function's writes are by: derived from the call and the
    /// function's place in it ([`invocation_writer`]), the same for every
    /// attempt, so a retried invocation's lattice writes merge into the
    /// first attempt's (a counter it increments counts once).
    pub writer: WriterId,
    /// The call this is a function of (what its output is tagged with in
    /// the executor's log).
    pub call: CallId,
    /// A call of a method of a named instance: its state's key.
    pub instance: Option<String>,
}

/// The writer identity of function `function` of call `id`, the same for
/// every attempt of the call.
pub fn invocation_writer(id: CallId, function: u16) -> WriterId {
    let mut bytes = [0u8; 18];
    bytes[..8].copy_from_slice(&id.caller.to_le_bytes());
    bytes[8..16].copy_from_slice(&id.seq.to_le_bytes());
    bytes[16..].copy_from_slice(&function.to_le_bytes());
    WriterId(anna::ring::stable_hash(&bytes))
}

/// A finished [`Job`].
#[derive(Clone, Debug, PartialEq)]
pub struct JobDone {
    pub seq: u64,
    /// The result in the runtime's encoding, or why there is none.
    pub outcome: Result<Vec<u8>, CallError>,
    /// What the function did besides its result.
    pub effects: Effects,
}

/// What a function did besides its result, reported by its runtime's user
/// library: the versions of its acknowledged writes (for its caller's
/// session and downstream reads) and, under repeatable read, the states
/// its reads pinned (for downstream reads).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    pub written: Session,
    pub pinned: Session,
    /// What it printed (stdout, stderr, `logging`); empty if nothing.
    pub output: String,
    /// Its reads through the node's cache (for a traced call); `bytes`
    /// counts those of `kept_reads` too.
    pub reads: squall_transport::endpoint::Reads,
    /// Its reads of `Reference` arguments the runtime's kept values
    /// answered (no read through the cache).
    pub kept_reads: u32,
}

impl Effects {
    /// Whether downstream functions (or the caller) learn anything from
    /// them: writes, pins or output. (Reads only go into a trace.)
    pub fn change_the_plan(&self) -> bool {
        !self.written.is_empty() || !self.pinned.is_empty() || !self.output.is_empty()
    }

    /// Adds `other`'s writes, pins (the first pin of a key wins) and
    /// output.
    pub fn add(&mut self, other: Effects) {
        self.written.join(&other.written);
        self.pinned.pin_all(&other.pinned);
        self.output.push_str(&other.output);
        self.reads.reads += other.reads.reads;
        self.reads.cache_hits += other.reads.cache_hits;
        self.reads.bytes += other.reads.bytes;
        self.kept_reads += other.kept_reads;
    }
}

/// A [`CallError`] of `kind` with no traceback.
pub fn call_error(
    kind: CallErrorKind,
    type_name: &str,
    message: impl Into<String>,
    function: &str,
) -> CallError {
    CallError {
        kind,
        type_name: type_name.to_string(),
        message: message.into(),
        traceback: String::new(),
        function: Some(function.to_string()),
    }
}
