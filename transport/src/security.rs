//! The process's frame security: the identity it seals with, the clients
//! it accepts, whether bodies are encrypted (see `anna::protocol::seal`).
//!
//! A process sets it once, before it binds or connects anything
//! ([`set_security`]); every [`crate::Receiver`] and [`crate::Sender`]
//! made afterwards seals and opens with it. A process that sets nothing
//! sends and accepts open frames only (what the crates' own tests do; the
//! `squall` binary and the Python client always set it).

use anna::protocol::seal::{Identity, Rights, Secret, Security};
use rand::rngs::OsRng;
use rand::TryRngCore;
use std::path::Path;
use std::sync::{Arc, RwLock};

static SECURITY: RwLock<Option<Arc<Security>>> = RwLock::new(None);

/// Makes `security` the process's from now on.
pub fn set_security(security: Security) {
    let mut slot = SECURITY.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(Arc::new(security));
}

/// The process's security (open frames if none was set).
pub fn security() -> Arc<Security> {
    let slot = SECURITY.read().unwrap_or_else(|e| e.into_inner());
    slot.clone()
        .unwrap_or_else(|| Arc::new(Security::insecure()))
}

/// A new cluster secret from the operating system's random source.
pub fn new_secret() -> std::io::Result<Secret> {
    let mut bytes = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(std::io::Error::other)?;
    Ok(Secret::from_bytes(bytes))
}

/// The secret of every cluster a test or benchmark process starts: drawn
/// once, and made this process's own (a member's, accepting client
/// `admin` with every right) the first time, so that its clients and
/// probes seal their frames as the cluster's processes do. The process
/// writes it into each state directory before `squall up`, which keeps a
/// secret already there.
pub fn shared_test_secret() -> &'static Secret {
    static SECRET: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let secret = new_secret().expect("random bytes for the cluster's secret");
        set_security(Security {
            identity: Some(Identity::member(secret.clone())),
            clients: [("admin".to_string(), Rights::all())].into(),
            encrypt: false,
        });
        secret
    })
}

/// A random sender id: with its counter, every nonce a sender uses.
pub fn sender_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if OsRng.try_fill_bytes(&mut id).is_err() {
        // No OS randomness: a process-unique id all the same (pid, time).
        let a = crate::clock::fresh_id("sender-a").to_le_bytes();
        let b = crate::clock::fresh_id("sender-b").to_le_bytes();
        id[..8].copy_from_slice(&a);
        id[8..].copy_from_slice(&b);
    }
    id
}

/// Seconds since the Unix epoch: the time sealed frames carry.
pub fn unix_secs() -> u64 {
    crate::clock::now().as_millis() / 1000
}

/// Reads a key file: the cluster's secret or a client's key.
pub fn read_identity(path: &Path) -> Result<Identity, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    Identity::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `text` to a new key file at `path` readable by its owner only.
pub fn write_key_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
