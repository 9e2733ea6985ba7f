//! The cluster's keys: written by `squall up` into `STATE_DIR/keys`, read
//! by every process before it opens a socket.
//!
//! - `keys/cluster.key`: the cluster's secret. Every role (storage node,
//!   router, scheduler, cache, executor, monitor) needs it; so do the local
//!   operator's tools (`up`, `down`, `scale`, `status`), which act as
//!   members.
//! - `keys/client-NAME.key`: the key of client NAME of `[security.clients]`.
//! - `keys/client.key`: the default client's key, what `squall kv` and the
//!   Python client's `squall.connect()` use.
//! - `keys/executor.key`: the executors' key. It is not the secret: code
//!   running in an executor cannot speak as a storage node, router, cache,
//!   scheduler or the monitor (no membership, no gossip, no scaling).
//! - `keys/member.key`: caches' and schedulers' keys, not the secret: they
//!   cannot speak for a storage node.
//! - `keys/node-ID.key`: storage node ID's keys and its own node key (its
//!   joins, heartbeats and departures are sealed with it; routers, which
//!   hold the secret, check it), written when the node is first started.
//!
//! Routers, the monitor and the local tools hold the secret.
//!
//! Key files are created once (mode 0600) and kept: a cluster restarted on
//! the same state directory keeps its keys, and its clients keep working.

use crate::config::SquallConfig;
use anna::protocol::seal::{Identity, Security};
use anyhow::{bail, Context, Result};
use squall_transport::security::{new_secret, read_identity, set_security, write_key_file};
use std::path::{Path, PathBuf};

/// What a command is to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// A role: needs the cluster's secret.
    Member,
    /// An executor: the executors' key (or the secret).
    Executor,
    /// Storage node `0`: its node key (or the secret, from which its node
    /// key is derived).
    Node(u64),
    /// A local operator's tool (`up`, `down`, `scale`, `status`, `ping`):
    /// the cluster's secret when there is one, else open frames.
    Tool,
    /// A client (`squall kv`): a client key, or the secret.
    Client,
}

/// The directory of a state directory's keys.
pub fn keys_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("keys")
}

/// The cluster's secret in `state_dir`.
pub fn cluster_key(state_dir: &Path) -> PathBuf {
    keys_dir(state_dir).join("cluster.key")
}

/// The default client's key in `state_dir`.
pub fn client_key(state_dir: &Path) -> PathBuf {
    keys_dir(state_dir).join("client.key")
}

/// The executors' key beside the cluster's secret `cluster_key`.
pub fn executor_key_beside(cluster_key: &Path) -> PathBuf {
    cluster_key.with_file_name("executor.key")
}

/// The key file a process started with `args` (`kvs --id 3 ...`,
/// `executor ...`) gets, beside the cluster's secret `cluster_key`: the
/// least it needs. A storage node's is written on its first start.
pub fn key_for(args: &[String], cluster_key: &Path) -> Result<PathBuf> {
    let role = args.first().map(String::as_str);
    Ok(match role {
        Some("executor") => executor_key_beside(cluster_key),
        Some("cache") | Some("scheduler") => cluster_key.with_file_name("member.key"),
        Some("kvs") => {
            let id = args
                .iter()
                .position(|a| a == "--id")
                .and_then(|i| args.get(i + 1))
                .and_then(|id| id.parse::<u64>().ok())
                .context("a storage node's arguments without --id")?;
            let path = cluster_key.with_file_name(format!("node-{id}.key"));
            if !path.exists() {
                let secret = read_identity(cluster_key)
                    .map_err(anyhow::Error::msg)?
                    .secret()
                    .cloned()
                    .with_context(|| format!("{} is not the secret", cluster_key.display()))?;
                write_key_file(&path, &secret.node_key_file(id))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            path
        }
        _ => cluster_key.to_path_buf(),
    })
}

/// Writes the keys `state_dir` lacks: the secret, a key per configured
/// client, and `client.key` for the default client. Returns the secret's
/// path.
pub fn ensure_keys(state_dir: &Path, config: &SquallConfig) -> Result<PathBuf> {
    let path = cluster_key(state_dir);
    let secret = if path.exists() {
        match read_identity(&path).map_err(anyhow::Error::msg)?.secret() {
            Some(secret) => secret.clone(),
            None => bail!(
                "{} holds another key than the cluster's secret",
                path.display()
            ),
        }
    } else {
        let secret = new_secret().context("drawing the cluster's secret")?;
        write_key_file(&path, &secret.key_file())
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote the cluster's secret");
        secret
    };
    for (file, text) in [
        (executor_key_beside(&path), secret.executor_key_file()),
        (path.with_file_name("member.key"), secret.member_key_file()),
    ] {
        if !file.exists() {
            write_key_file(&file, &text).with_context(|| format!("writing {}", file.display()))?;
        }
    }
    let clients = &config.security;
    let default = clients.default_client();
    for name in clients.clients.keys() {
        let mut files = vec![keys_dir(state_dir).join(format!("client-{name}.key"))];
        if Some(name.as_str()) == default {
            files.push(client_key(state_dir));
        }
        for file in files.into_iter().filter(|f| !f.exists()) {
            write_key_file(&file, &secret.client_key_file(name))
                .with_context(|| format!("writing {}", file.display()))?;
        }
    }
    Ok(path)
}

/// The key file this process installed (absolute); `None` with security
/// off.
static INSTALLED: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// How the processes this one starts seal their frames, for their command
/// lines: `(insecure, key file)`, the same as this process.
pub fn for_children() -> (bool, Option<PathBuf>) {
    let installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (installed.is_none(), installed)
}

/// Sets this process's frame security from `--insecure`, `--key-file` and
/// `[security]`, before any socket is made.
pub fn install(
    key_file: Option<&Path>,
    insecure: bool,
    config: &SquallConfig,
    who: Who,
) -> Result<()> {
    let section = &config.security;
    let state_dir = &config.cluster.state_dir;
    let given = key_file.or(section.key_file.as_deref());
    // A local cluster started with --insecure says so in its record.
    let recorded_insecure = || {
        crate::record::read_record(state_dir)
            .ok()
            .and_then(|r| r.launch)
            .is_some_and(|l| l.insecure)
    };
    if insecure
        || section.insecure
        || (given.is_none() && who != Who::Member && recorded_insecure())
    {
        set_security(Security::insecure());
        return Ok(());
    }
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => match who {
            Who::Member | Who::Tool => cluster_key(state_dir),
            Who::Executor => executor_key_beside(&cluster_key(state_dir)),
            Who::Node(id) => cluster_key(state_dir).with_file_name(format!("node-{id}.key")),
            Who::Client if client_key(state_dir).exists() => client_key(state_dir),
            Who::Client => cluster_key(state_dir),
        },
    };
    if !path.exists() && who == Who::Tool && given.is_none() {
        tracing::debug!(path = %path.display(), "no cluster key: open frames");
        set_security(Security::insecure());
        return Ok(());
    }
    if !path.exists() {
        bail!(
            "no key file at {}: start the cluster with `squall up` (it writes its keys to \
             STATE_DIR/keys), name a key with --key-file, or turn authentication off with \
             --insecure (on every process of the cluster)",
            path.display()
        );
    }
    let mut identity = read_identity(&path).map_err(anyhow::Error::msg)?;
    if let Who::Node(id) = who {
        identity = identity.as_node(id);
        if identity.is_member() && identity.node() != Some(id) {
            bail!(
                "{} is not storage node {id}'s key (a node needs STATE_DIR/keys/node-{id}.key \
                 or the cluster's secret)",
                path.display()
            );
        }
    }
    let fits = match who {
        Who::Member | Who::Node(_) => identity.is_member(),
        Who::Executor => identity.is_member() || identity.is_executor(),
        Who::Tool | Who::Client => true,
    };
    if !fits {
        bail!(
            "{} is {}; this command needs the cluster's secret (STATE_DIR/keys/cluster.key{})",
            path.display(),
            match identity.client_name() {
                Some(name) => format!("client {name:?}'s key"),
                None => "the executors' key".to_string(),
            },
            if who == Who::Executor {
                " or executor.key"
            } else {
                ""
            }
        );
    }
    let absolute = std::path::absolute(&path).unwrap_or(path);
    *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(absolute);
    set_security(Security {
        identity: Some(identity),
        clients: section.client_rights(),
        encrypt: section.encrypt,
    });
    Ok(())
}

/// `squall keys`: writes the keys `STATE_DIR/keys` lacks and lists them.
pub fn write_and_list(config: &SquallConfig) -> Result<()> {
    let dir = &config.cluster.state_dir;
    ensure_keys(dir, config)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(keys_dir(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        let what = match read_identity(&file) {
            Ok(identity @ Identity::Member { .. }) => match (identity.secret(), identity.node()) {
                (Some(_), _) => "the cluster's secret: routers, the monitor, squall's own tools \
                                 (and storage nodes, caches and schedulers that are given no \
                                 other)"
                    .to_string(),
                (None, Some(id)) => format!("storage node {id}'s key"),
                (None, None) => "caches' and schedulers' key".to_string(),
            },
            Ok(Identity::Executor { .. }) => {
                "the executors' key: no membership, gossip or scaling".to_string()
            }
            Ok(Identity::Client { name, .. }) => match config.security.clients.get(&name) {
                Some(rights) => {
                    let rights: Vec<&str> = rights.iter().map(|r| r.name()).collect();
                    format!("client {name}: {}", rights.join(", "))
                }
                None => format!("client {name}: not in [security.clients], refused"),
            },
            Err(e) => format!("unreadable: {e}"),
        };
        println!("{}  {what}", file.display());
    }
    Ok(())
}
