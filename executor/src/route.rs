//! [`CacheRoute`]: the one way a running function reaches the node's cache,
//! whatever its runtime.
//!
//! A Python function's `squall.user.get`/`put`/`delete` (through the native
//! module `_squall_executor`), the `Reference` arguments of every call, and
//! a WebAssembly function's host imports `squall.get`/`squall.put` (in
//! Rust, without Python) all go through here. The route is one
//! [`Endpoint`] to the cache (plain request/response, bounded by
//! [`KVS_TIMEOUT`]) wrapped in a [`CallEndpoint`] that reads and writes as
//! the running call must:
//!
//! - every read sees at least what the caller's session wrote of the key
//!   (`CallEnv::session`), and what the function itself wrote;
//! - under `repeatable_read` and `causal` a read answers the version an
//!   upstream function of the call read (`CallEnv::pinned`), else pins what
//!   it reads; under `causal` a read multi-key causal value's dependencies
//!   become versions later reads must cover;
//! - under `causal` a multi-key causal write with no dependencies depends
//!   on every causal value the call read;
//! - writes are made as the invocation's writer (`CallEnv::writer`), the
//!   same for every attempt.
//!
//! The worker brackets each job with [`CacheRoute::begin`] and
//! [`CacheRoute::end`]; `end` hands over what the function wrote and pinned.

use crate::job::{CallEnv, Effects};
use anna::lattice::{Causal, Dependent, KeyState, Lattice, LatticeValue, Timestamp, VectorClock};
use anna::protocol::compute::Consistency;
use anna::protocol::{Ack, Address, Session};
use squall_py::{lock, Kvs, KvsFailure, Store};
use squall_transport::Endpoint;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest one read or write through the cache may take.
pub const KVS_TIMEOUT: Duration = Duration::from_secs(1);

/// The running call's way to the node's cache; one per worker, shared by
/// its runtimes.
pub struct CacheRoute {
    timeout: Duration,
    current: Mutex<Current>,
}

#[derive(Default)]
struct Current {
    /// The running call, between `begin` and `end`.
    call: Option<Arc<CallEnv>>,
    /// The endpoint, connected at the first use (to the call's cache).
    store: Option<Arc<Store<CallEndpoint>>>,
}

impl Default for CacheRoute {
    fn default() -> Self {
        CacheRoute::new(KVS_TIMEOUT)
    }
}

impl CacheRoute {
    /// A route whose every request is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        CacheRoute {
            timeout,
            current: Mutex::new(Current::default()),
        }
    }

    /// A job for the call `env` starts: reads and writes from now on are
    /// the call's.
    pub fn begin(&self, env: &CallEnv) {
        let call = Arc::new(env.clone());
        let mut current = lock(&self.current);
        if let Some(store) = &current.store {
            if store.with_net(|net| net.endpoint.target() == &env.cache) {
                store.with_net(|net| net.call = call.clone());
                store.set_writer(env.writer);
            } else {
                current.store = None;
            }
        }
        current.call = Some(call);
    }

    /// The job ended: what its function wrote (acknowledged) and, under
    /// repeatable read, pinned.
    pub fn end(&self) -> Effects {
        let mut current = lock(&self.current);
        current.call = None;
        match &current.store {
            Some(store) => store.with_net(|net| {
                net.call = Arc::default();
                Effects {
                    written: net.endpoint.take_written(),
                    pinned: net.endpoint.take_pinned(),
                    output: String::new(),
                    reads: net.endpoint.take_reads(),
                    kept_reads: 0,
                }
            }),
            None => Effects::default(),
        }
    }

    /// The running call; `None` between jobs.
    pub fn call(&self) -> Option<Arc<CallEnv>> {
        lock(&self.current).call.clone()
    }

    /// The store of the running call, connecting to its cache the first
    /// time.
    pub fn store(&self) -> Result<Arc<Store<CallEndpoint>>, KvsFailure> {
        let mut current = lock(&self.current);
        let Some(call) = current.call.clone() else {
            return Err(KvsFailure(anna::client::ClientError::Transport(
                "no call is running on this executor".into(),
            )));
        };
        if let Some(store) = &current.store {
            return Ok(store.clone());
        }
        // Answers from a cache reached over `ipc://` (this node's) come
        // back over `ipc://` too: the cache then knows this executor is
        // on its machine and answers large values in shared memory.
        let bind = if call.cache.as_str().starts_with("ipc://") {
            answer_socket()
        } else {
            Address::from("tcp://127.0.0.1:*")
        };
        let endpoint = Endpoint::connect(call.cache.clone(), &bind, self.timeout)?;
        let writer = call.writer;
        let store = Arc::new(Store::new(CallEndpoint { endpoint, call }, writer));
        current.store = Some(store.clone());
        Ok(store)
    }

    /// Reads `key` as the running call must ([`Kvs::get_pinned`] of
    /// [`CallEndpoint`]), without converting it.
    pub fn read(&self, key: &str) -> Result<Option<LatticeValue>, KvsFailure> {
        self.store()?.with_net(|net| net.get_pinned(key, None))
    }
}

/// The node's cache as the running call reads and writes it.
pub struct CallEndpoint {
    endpoint: Endpoint,
    call: Arc<CallEnv>,
}

impl CallEndpoint {
    /// `at_least` joined with the caller's version of `key`.
    fn with_session(&self, key: &str, at_least: Option<&KeyState>) -> Option<KeyState> {
        let session = self.call.session.get(key);
        match (at_least, session) {
            (None, None) => None,
            (Some(w), None) | (None, Some(w)) => Some(w.clone()),
            (Some(a), Some(b)) => Some(a.clone().join(b.clone())),
        }
    }

    /// Under causal: a multi-key causal write of one version with no
    /// dependencies depends on every causal value the call read (upstream
    /// and here), except `key` itself.
    fn with_dependencies(&self, key: &str, value: LatticeValue) -> LatticeValue {
        let lone = match &value {
            LatticeValue::MultiKeyCausal(c) => {
                let mut versions = c.versions();
                match (versions.next(), versions.next()) {
                    (Some(v), None) if v.payload.dependencies.is_empty() => Some(v.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(version) = lone else {
            return value;
        };
        let mut cut: BTreeMap<String, VectorClock> = BTreeMap::new();
        let clocks = self.call.pinned.causal_clocks().into_iter();
        for (k, clock) in clocks.chain(self.endpoint.pinned().causal_clocks()) {
            cut.entry(k).or_default().merge(clock);
        }
        cut.remove(key);
        let payload = Dependent {
            dependencies: cut,
            value: version.payload.value,
        };
        LatticeValue::MultiKeyCausal(Causal::new(version.clock, payload))
    }
}

/// A fresh `ipc://` address for a store's answers: a socket in Linux's
/// abstract namespace (`@NAME`: no file to leave behind when an executor
/// is killed, gone with the process), reachable by the cache in the same
/// network namespace (the same machine, or the same Kubernetes pod). A
/// process that connects to it can only send, and what it sends is
/// dropped unless sealed by a member.
fn answer_socket() -> Address {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    Address(format!("ipc://@squall-executor-{pid}-{n}"))
}

impl Kvs for CallEndpoint {
    /// A plain read, at least at the caller's and the function's versions.
    fn get(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
        let at_least = self.with_session(key, at_least);
        Ok(self.endpoint.get(key, at_least.as_ref())?)
    }

    /// A read at the call's consistency level (see the module's docs).
    fn get_pinned(
        &mut self,
        key: &str,
        at_least: Option<&KeyState>,
    ) -> Result<Option<LatticeValue>, KvsFailure> {
        let at_least = self.with_session(key, at_least);
        let level = self.call.consistency;
        if level == Consistency::Lww {
            return Ok(self.endpoint.get(key, at_least.as_ref())?);
        }
        let required = self.endpoint.required(key, at_least.as_ref());
        let upstream = (self.call.pinned.get(key))
            .filter(|state| required.as_ref().is_none_or(|r| state.covers(r)));
        let value = match upstream {
            Some(state) => state.visible().map(|v| v.into_owned()),
            None => self.endpoint.get_pinned(key, at_least.as_ref())?,
        };
        if level == Consistency::Causal {
            if let Some(LatticeValue::MultiKeyCausal(c)) = &value {
                for (dep, clock) in c.dependencies() {
                    let witness = Causal::new(clock, Dependent::default());
                    let state = KeyState::from_value(LatticeValue::MultiKeyCausal(witness));
                    self.endpoint.require(&dep, state);
                }
            }
        }
        Ok(value)
    }

    fn put(&mut self, key: &str, value: LatticeValue, ack: Option<Ack>) -> Result<(), KvsFailure> {
        let value = match self.call.consistency {
            Consistency::Causal => self.with_dependencies(key, value),
            _ => value,
        };
        Ok(self.endpoint.put(key, value, ack)?)
    }

    fn delete(&mut self, key: &str, at: Timestamp, ack: Option<Ack>) -> Result<(), KvsFailure> {
        Ok(self.endpoint.delete(key, at, ack)?)
    }

    fn take_written(&mut self) -> Session {
        self.endpoint.take_written()
    }

    fn take_pinned(&mut self) -> Session {
        self.endpoint.take_pinned()
    }
}
