//! `squall kv get|put|del`: every lattice type from the shell.
//!
//! Values are typed with `--type` (default `lww`); each type has a plain
//! form on the command line, and `--json` takes or prints any value in its
//! serde JSON form (the wire enum `LatticeValue`), nested maps included.

use anna::client::ClientConfig;
use anna::cluster::ReplicationFactor;
use anna::lattice::{
    element, Causal, Counter, Dependent, LatticeKind, LatticeValue, Lww, MapLattice, Max, Min,
    ORMapLattice, ORSetLattice, OrderedSetLattice, Priority, SetLattice, VectorClock, WriterId,
};
use anna::protocol::{Ack, Address};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use squall_transport::Client;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Debug, Subcommand)]
enum KvOp {
    /// Print a key's value (`(not found)` and exit code 1 if it has none).
    Get {
        key: String,
        /// Print the value as JSON (the wire form), timestamps and all.
        #[arg(long)]
        json: bool,
    },
    /// Merge a value into a key.
    ///
    /// Forms by --type: lww VALUE...; set/ordered-set/or-set ELEMENT...
    /// (or-set: adds); max/min INTEGER; counter DELTA (negative
    /// decrements); priority PRIORITY VALUE; vector-clock WRITER=COUNT...;
    /// map/or-map FIELD=VALUE... (lww fields); single-key-causal VALUE and
    /// multi-key-causal VALUE (the write supersedes every version read).
    /// Any type: --json JSON (or-set and or-map removes too).
    ///
    /// A value is required (an empty lww value is `''`). A lone `-` in
    /// place of the value reads it from stdin, `--file PATH` from a file,
    /// as bytes, unchanged (a trailing newline included): the way to put
    /// values too big for the command line. That works for lww, set and
    /// ordered-set (one element), priority (`PRIORITY -`) and the causal
    /// types; `--json -` reads the JSON from stdin.
    Put {
        key: String,
        /// The value, in the form of its type; `-` reads it from stdin.
        #[arg(value_name = "VALUE", allow_negative_numbers = true)]
        values: Vec<String>,
        /// The lattice type.
        #[arg(long = "type", short = 't', default_value = "lww")]
        kind: LatticeKind,
        /// The whole value as JSON (the wire form); overrides VALUES; `-`
        /// reads it from stdin.
        #[arg(long, conflicts_with_all = ["values", "file"])]
        json: Option<String>,
        /// Read the value's bytes from this file (for a priority value,
        /// give PRIORITY as the only VALUE).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// When the put returns: `one` (the first replica merged it),
        /// a number of replicas, `all`, or `durable` (on disk at the
        /// first replica). Default: the config's `[client] put_ack`.
        #[arg(long, value_name = "LEVEL")]
        ack: Option<Ack>,
    },
    /// Delete a key (a tombstone; later puts start afresh).
    Del {
        key: String,
        /// When the delete returns (see `put --ack`). Default: the
        /// config's `[client] delete_ack` (every replica).
        #[arg(long, value_name = "LEVEL")]
        ack: Option<Ack>,
    },
    /// Set a key's replication factor: on how many nodes, and on how many
    /// threads of each (capped by what is live). New owners receive it.
    Replicate {
        key: String,
        /// Nodes holding the key.
        #[arg(long)]
        global: u8,
        /// Threads holding it on each of those nodes.
        #[arg(long, default_value_t = 1)]
        local: u8,
    },
}

pub fn run(args: &KvArgs, routers: Vec<Address>, config: &ClientConfig) -> Result<bool> {
    let mut client = Client::connect(routers, config.clone())?;
    match &args.op {
        KvOp::Get { key, json } => match client.get(key)? {
            Some(v) if *json => println!("{}", serde_json::to_string_pretty(&v)?),
            Some(v) => print!("{}", render(&v)),
            None => {
                eprintln!("(not found)");
                return Ok(false);
            }
        },
        KvOp::Put {
            key,
            values,
            kind,
            json,
            file,
            ack,
        } => {
            let value = match json {
                Some(j) if j == "-" => {
                    let j = read_stdin()?;
                    serde_json::from_slice(&j).context("parsing stdin as a lattice value")?
                }
                Some(j) => serde_json::from_str(j).context("parsing --json as a lattice value")?,
                None => {
                    let (values, input) = value_input(*kind, values, file.as_deref())?;
                    parse(&mut client, key, *kind, &values, input)?
                }
            };
            let ack = ack.unwrap_or(config.put_ack);
            client.put_with(key, value, ack)?;
        }
        KvOp::Del { key, ack } => client.delete_with(key, ack.unwrap_or(config.delete_ack))?,
        KvOp::Replicate { key, global, local } => {
            if *global == 0 || *local == 0 {
                bail!("--global and --local must be at least 1");
            }
            let factor = ReplicationFactor {
                global: *global,
                local: *local,
            };
            client.set_replication(key, factor)?;
        }
    }
    Ok(true)
}

/// The types whose value (or one element of it) is bytes: what stdin or
/// `--file` can give.
fn takes_bytes(kind: LatticeKind) -> bool {
    matches!(
        kind,
        LatticeKind::Lww
            | LatticeKind::Set
            | LatticeKind::OrderedSet
            | LatticeKind::ORSet
            | LatticeKind::Priority
            | LatticeKind::SingleKeyCausal
            | LatticeKind::MultiKeyCausal
    )
}

/// How many words a type's value takes before the value proper: priority
/// takes PRIORITY; every other type only the value.
fn words_before_value(kind: LatticeKind) -> usize {
    usize::from(kind == LatticeKind::Priority)
}

/// Refuses what cannot run before anything is asked of the cluster: a
/// `kv put` with no value (it would store an empty one).
pub fn check(args: &KvArgs) -> Result<()> {
    if let KvOp::Put {
        kind,
        values,
        json: None,
        file: None,
        ..
    } = &args.op
    {
        if values.len() <= words_before_value(*kind) {
            bail!(
                "no value given: put VALUE... as arguments, `-` to read it from stdin, or \
                 --file PATH (an empty value is '')"
            );
        }
    }
    Ok(())
}

/// Splits `kv put`'s arguments into the words given and the bytes read from
/// stdin (a lone `-` where the value goes) or `--file`; refuses a put with
/// no value at all.
fn value_input(
    kind: LatticeKind,
    values: &[String],
    file: Option<&Path>,
) -> Result<(Vec<String>, Option<Vec<u8>>)> {
    let before = words_before_value(kind);
    let stdin = values.len() == before + 1 && values[before] == "-";
    if file.is_none() && !stdin {
        return Ok((values.to_vec(), None));
    }
    if !takes_bytes(kind) {
        bail!(
            "stdin and --file give a value's bytes, for the lww, set, ordered-set, priority and \
             causal types; give a {kind:?} value as arguments or with --json"
        );
    }
    let words = values[..before.min(values.len())].to_vec();
    let bytes = match file {
        Some(path) => {
            if values.len() != before {
                bail!(
                    "--file gives the value: {}",
                    if before == 0 {
                        "give no VALUE with it"
                    } else {
                        "give only PRIORITY with it"
                    }
                );
            }
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => read_stdin()?,
    };
    Ok((words, Some(bytes)))
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .context("reading the value from stdin")?;
    Ok(bytes)
}

fn one<'a>(values: &'a [String], what: &str) -> Result<&'a str> {
    match values {
        [v] => Ok(v),
        _ => bail!("expected exactly one {what}, got {}", values.len()),
    }
}

fn int(values: &[String]) -> Result<i64> {
    let v = one(values, "integer")?;
    v.parse()
        .with_context(|| format!("`{v}` is not an integer"))
}

fn parse(
    client: &mut Client,
    key: &str,
    kind: LatticeKind,
    values: &[String],
    input: Option<Vec<u8>>,
) -> Result<LatticeValue> {
    // The value's bytes: what stdin or --file gave, else the words joined.
    let joined = |values: &[String]| values.join(" ").into_bytes();
    let elements = |input: Option<Vec<u8>>| -> Vec<Vec<u8>> {
        match input {
            Some(bytes) => vec![bytes],
            None => values.iter().map(|v| v.as_bytes().to_vec()).collect(),
        }
    };
    Ok(match kind {
        LatticeKind::Lww => {
            let at = client.timestamp();
            LatticeValue::Lww(Lww::new(at, input.unwrap_or_else(|| joined(values))))
        }
        LatticeKind::Set => LatticeValue::Set(SetLattice::new(elements(input))),
        LatticeKind::OrderedSet => {
            LatticeValue::OrderedSet(OrderedSetLattice::new(elements(input)))
        }
        LatticeKind::Max => LatticeValue::Max(Max::new(int(values)?)),
        LatticeKind::Min => LatticeValue::Min(Min::new(int(values)?)),
        LatticeKind::Counter => {
            let delta = int(values)?;
            let mut c = Counter::default();
            if delta >= 0 {
                c.increment(client.writer(), delta.unsigned_abs());
            } else {
                c.decrement(client.writer(), delta.unsigned_abs());
            }
            LatticeValue::Counter(c)
        }
        LatticeKind::Priority => match values {
            [p, rest @ ..] => {
                let p: f64 = p
                    .parse()
                    .with_context(|| format!("`{p}` is not a number"))?;
                let value = input.unwrap_or_else(|| joined(rest));
                LatticeValue::Priority(Priority::new(p, value))
            }
            [] => bail!("expected PRIORITY VALUE"),
        },
        LatticeKind::VectorClock => {
            let mut entries = Vec::new();
            for v in values {
                let (w, n) = v
                    .split_once('=')
                    .with_context(|| format!("`{v}` is not WRITER=COUNT"))?;
                let w = u64::from_str_radix(w.trim_start_matches("0x"), 16)
                    .with_context(|| format!("writer `{w}` is not a hex id"))?;
                let n = n
                    .parse()
                    .with_context(|| format!("count `{n}` is not a number"))?;
                entries.push((WriterId(w), n));
            }
            LatticeValue::VectorClock(VectorClock::new(entries))
        }
        LatticeKind::Map | LatticeKind::ORMap => {
            let (mut m, mut or) = (MapLattice::default(), ORMapLattice::default());
            for v in values {
                let (field, value) = v
                    .split_once('=')
                    .with_context(|| format!("`{v}` is not FIELD=VALUE"))?;
                let at = client.timestamp();
                let value = LatticeValue::Lww(Lww::new(at, value.as_bytes().to_vec()));
                m.insert(field.to_string(), value.clone());
                or.update(field.to_string(), at, value);
            }
            if kind == LatticeKind::Map {
                LatticeValue::Map(m)
            } else {
                LatticeValue::ORMap(or)
            }
        }
        LatticeKind::ORSet => {
            LatticeValue::ORSet(ORSetLattice::with_adds(client.timestamp(), elements(input)))
        }
        LatticeKind::SingleKeyCausal | LatticeKind::MultiKeyCausal => {
            let value = input.unwrap_or_else(|| joined(values));
            // Supersede every version there is: our clock is the merge of
            // theirs, plus one event of ours.
            let mut clock = match client.get(key)? {
                Some(LatticeValue::SingleKeyCausal(c)) => c.vector_clock(),
                Some(LatticeValue::MultiKeyCausal(c)) => c.vector_clock(),
                _ => VectorClock::default(),
            };
            clock.increment(client.writer());
            if kind == LatticeKind::SingleKeyCausal {
                LatticeValue::SingleKeyCausal(Causal::new(clock, value))
            } else {
                let payload = Dependent {
                    dependencies: Default::default(),
                    value,
                };
                LatticeValue::MultiKeyCausal(Causal::new(clock, payload))
            }
        }
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A value as a person reads it, one item per line.
fn render(value: &LatticeValue) -> String {
    let mut s = String::new();
    match value {
        // A Python client's plain objects are pickles: shown as Python
        // shows them (never unpickled by running anything).
        LatticeValue::Lww(l) => match crate::pickle::describe(l.value()) {
            Some(shown) => s.push_str(&format!("{shown}\n")),
            None => s.push_str(&format!("{}\n", text(l.value()))),
        },
        LatticeValue::Set(set) => lines(&mut s, set.reveal().iter()),
        LatticeValue::ORSet(set) => lines(&mut s, set.elements()),
        LatticeValue::OrderedSet(set) => {
            for e in set.reveal() {
                s.push_str(&format!("{}\n", text(e)));
            }
        }
        LatticeValue::Max(m) => s.push_str(&format!("{}\n", fmt_opt(m.reveal()))),
        LatticeValue::Min(m) => s.push_str(&format!("{}\n", fmt_opt(m.reveal()))),
        LatticeValue::Counter(c) => s.push_str(&format!("{}\n", c.value())),
        LatticeValue::Map(m) => fields(&mut s, m.reveal()),
        LatticeValue::ORMap(m) => fields(&mut s, m.fields()),
        LatticeValue::VectorClock(vc) => {
            for (w, n) in vc.reveal() {
                s.push_str(&format!("{w}={n}\n"));
            }
        }
        LatticeValue::SingleKeyCausal(c) => {
            for v in c.versions() {
                s.push_str(&format!("{}\t{}\n", text(&v.payload), clock(&v.clock)));
            }
        }
        LatticeValue::MultiKeyCausal(c) => {
            for v in c.versions() {
                s.push_str(&format!(
                    "{}\t{}\n",
                    text(&v.payload.value),
                    clock(&v.clock)
                ));
            }
        }
        LatticeValue::Priority(p) => match p.reveal() {
            Some((prio, v)) => s.push_str(&format!("{prio}\t{}\n", text(v))),
            None => s.push_str("(empty)\n"),
        },
    }
    s
}

/// Set elements, sorted, one per line (text without its marker; see
/// `anna::lattice::element`).
fn lines<'a>(s: &mut String, elements: impl Iterator<Item = &'a Vec<u8>>) {
    let mut items: Vec<_> = elements.map(|e| element::display(e)).collect();
    items.sort();
    for e in items {
        s.push_str(&format!("{e}\n"));
    }
}

/// Map fields, one `field = value` per line.
fn fields<'a>(s: &mut String, fields: impl IntoIterator<Item = (&'a String, &'a LatticeValue)>) {
    for (field, v) in fields {
        let inner = render(v);
        s.push_str(&format!(
            "{field} = {}\n",
            inner.trim_end().replace('\n', ", ")
        ));
    }
}

fn fmt_opt(v: Option<&i64>) -> String {
    v.map_or_else(|| "(empty)".to_string(), i64::to_string)
}

fn clock(vc: &VectorClock) -> String {
    let parts: Vec<String> = vc
        .reveal()
        .iter()
        .map(|(w, n)| format!("{w}={n}"))
        .collect();
    format!("[{}]", parts.join(" "))
}
