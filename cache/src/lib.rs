//! The per-node cache of the compute tier: a lattice replica of the keys its
//! executors read, kept fresh by the KVS pushing updates of subscribed keys.
//!
//! Executors on a compute node know nothing of hash rings: they send every
//! [`KvsRequest`](anna::protocol::KvsRequest) to their node's cache (over
//! `ipc://`), which answers exactly like a storage thread would, for any key.
//! The cache is a [`Role`](anna::role::Role) (a state machine, no socket,
//! clock or random source inside); a `squall_transport::ZmqDriver` bound at
//! its `tcp://` address (where the KVS reaches it), with the executors'
//! `ipc://` endpoint added by `ZmqDriver::bind_also`, runs it.
//!
//! # Hits and misses
//!
//! A read of a held key is a *hit*: answered from the replica at once. Any
//! other read is a *miss*: the embedded [`ClientCore`](anna::client::ClientCore)
//! fetches the key from its owner threads (several reads of one missing key
//! share one fetch); a value found is held from then on, a key the KVS does
//! not hold is answered `NotFound` and not held (absence is not cached). A
//! write is merged into the held state if the key is held (a write of
//! another lattice kind is refused without touching anything), relayed to
//! the KVS at the request's acknowledgement level, and answered once the KVS
//! acknowledged it. A delete is relayed too and the key stops being held. A
//! request of several operations is answered once, results in order.
//!
//! # Subscriptions and leases
//!
//! Holding a key means subscribing to it at each of its owner threads
//! ([`Subscribe`](anna::protocol::compute::Subscribe), with a lease). The
//! owners answer with the key's current state at once (so a write between
//! the read and the subscription is not missed) and push every change in
//! their next gossip round; the cache merges what it is pushed. It renews
//! every held key's subscription every third of the lease, refreshing the
//! placement from a router each time so that renewals follow ring changes.
//! Executors subscribe to keys at the cache the same way (same lease logic)
//! and are pushed every change of a held key as a `Gossip` from the cache:
//! that is how they invalidate warm functions and values.
//!
//! # Eviction
//!
//! The replica is bounded by `capacity_bytes` (approximate sizes of keys and
//! values): beyond it the least recently *used* keys (read or written by an
//! executor; pushes do not count) are evicted. An evicted key is not renewed,
//! so its lease lapses at the owners; a later read is a miss again.
//!
//! # What it reports
//!
//! Every `report_period`, a [`CacheReport`](anna::protocol::compute::CacheReport)
//! to each scheduler: the node, the cache's address, the largest held keys
//! (at most `report_keys`) with their approximate sizes, and the hit and
//! miss counts, so schedulers place calls where their data is. A
//! `StatusRequest` is answered with named counters (hits, misses,
//! evictions, keys, bytes, subscriptions, ...), the transport's included.
//!
//! # Layout
//!
//! - [`config`]: [`CacheConfig`], the `[cache]` section.
//! - `cache.rs`: [`Cache`], its state, dispatch and timers.
//! - `requests.rs`: executors' gets, puts and deletes; hits and misses.
//! - [`anna::shared`]: large values answered to executors in shared memory.
//! - `subscriptions.rs`: subscriptions at the KVS and executors'
//!   subscriptions at the cache; pushes both ways.
//! - `store.rs`: the bounded replica with least-recently-used eviction.
//! - [`report`]: reports to schedulers and status counters.

mod cache;
pub mod config;
pub mod report;
mod requests;
mod store;
mod subscriptions;

pub use anna::shared::ValueFiles;
pub use cache::Cache;
pub use config::{CacheConfig, ConfigError};
pub use report::CacheStats;

/// Large values answered to executors in shared memory
/// ([`anna::shared`], shared with storage threads).
pub mod shared {
    pub use anna::shared::GRACE;
}
pub use subscriptions::SUBSCRIBE_BATCH;
