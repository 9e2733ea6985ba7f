//! What a store must offer to be measured: [`KvBackend`], one blocking
//! connection, and [`BackendFactory`], which opens one per client thread.
//!
//! The load generator is closed-loop: each client thread owns one
//! connection and has exactly one request in flight on it, so the trait is
//! blocking and takes `&mut self`. A backend never shares a connection
//! between threads; the factory is the only shared part.
//!
//! # Plugging in a store
//!
//! [`crate::squall`] is the worked example: its factory starts a local
//! cluster with `squall up` and stops it on drop (as
//! [`crate::redis::RedisFactory`] does with `redis-server`), `connect`
//! opens one `anna` client per thread, `get`/`put` read and write
//! last-writer-wins bytes, and `put_batch` keeps many puts in flight so
//! preloading 100k keys is quick. A new store is one more such module and
//! one more name in `squall-bench kvs --backends`.

use std::time::Duration;

/// Why a request failed. The load generator counts these; it never panics
/// on them.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The connection failed or was closed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// No answer arrived in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer sent something that is not a valid answer.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The store answered with an error.
    #[error("server error: {0}")]
    Server(String),
    /// The backend could not be started or reached at all.
    #[error("{0}")]
    Setup(String),
}

/// The result of a backend call.
pub type Result<T> = std::result::Result<T, BackendError>;

/// One blocking connection to a key-value store, used by one client thread.
pub trait KvBackend {
    /// Reads `key`: its value, or `None` if it holds none.
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Writes `value` under `key`, returning once the store acknowledged it.
    fn put(&mut self, key: &str, value: &[u8]) -> Result<()>;

    /// Reads `keys` in one request (a multi-key read, a pipeline) and
    /// returns how many held nothing. The default reads them one by one.
    fn get_many(&mut self, keys: &[&str]) -> Result<usize> {
        let mut missing = 0;
        for key in keys {
            missing += usize::from(self.get(key)?.is_none());
        }
        Ok(missing)
    }

    /// Writes `items` in one request (a multi-key write, a pipeline). The
    /// default writes them one by one.
    fn put_many(&mut self, items: &[(&str, &[u8])]) -> Result<()> {
        for (key, value) in items {
            self.put(key, value)?;
        }
        Ok(())
    }

    /// Writes many keys, for preloading. The default writes them one by one;
    /// a backend with pipelining or multi-key requests should override it.
    fn put_batch(&mut self, items: &[(&str, &[u8])]) -> Result<()> {
        for (key, value) in items {
            self.put(key, value)?;
        }
        Ok(())
    }
}

/// Opens connections to one store: one per client thread, plus one for
/// preloading. Shared by reference between the client threads.
pub trait BackendFactory: Sync {
    /// The name printed in result tables, e.g. `redis`.
    fn name(&self) -> &str;

    /// Opens a new connection.
    fn connect(&self) -> Result<Box<dyn KvBackend + Send>>;

    /// The store's own processes on this machine (a server the factory
    /// started), so their CPU time is not mistaken for interference.
    fn server_pids(&self) -> Vec<u32> {
        Vec::new()
    }
}
