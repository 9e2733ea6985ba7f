//! Python pickles as a person reads them, for `squall kv get`.
//!
//! A Python client stores a plain object as `cloudpickle.dumps(obj)`, so
//! without this `squall kv get` of it prints pickle opcodes. This is a
//! small reader of the pickle format for the common values: `None`,
//! `bool`, `int`, `float`, `str`, `bytes`, `bytearray`, and lists, tuples,
//! dicts, sets and frozensets of them, printed as Python's `repr` prints
//! them. It never executes anything: an opcode that would import a name
//! or call one (any class instance, a function, a date) makes the whole
//! value `<pickled Python object, N bytes; read it with squall.Client.get>`.
//!
//! What counts as a pickle is what the Python client unpickles on `get`:
//! bytes that start with the protocol header (`0x80`, protocol 2 to 5) and
//! end with the STOP opcode.

use std::collections::HashMap;

mod repr;

use repr::{bytes_repr, cut, float_repr, int_repr, str_repr};

/// Whether `bytes` look like a pickle (the Python client's own test).
pub fn looks_pickled(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) && bytes.ends_with(b".")
}

/// `bytes` as Python would `repr` the object they pickle, or a line saying
/// what they are when the object is not one of the plain kinds; `None` if
/// they are no pickle.
pub fn describe(bytes: &[u8]) -> Option<String> {
    if !looks_pickled(bytes) {
        return None;
    }
    Some(decode(bytes).unwrap_or_else(|| {
        format!(
            "<pickled Python object, {} bytes; read it with squall.Client.get>",
            bytes.len()
        )
    }))
}

/// The `repr` of the plain value `bytes` pickle, if it is one.
fn decode(bytes: &[u8]) -> Option<String> {
    let mut m = Machine {
        data: bytes,
        pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    let top = m.run()?;
    let mut out = String::new();
    // Shared parts are printed wherever they occur: bound the text so a
    // crafted pickle of lists of lists cannot make it explode.
    let limit = bytes.len().saturating_mul(8).saturating_add(1024);
    m.render(top, 0, limit, &mut out);
    Some(out)
}

/// A decoded value; containers hold indices of other nodes, so a value the
/// pickle refers to twice (through its memo) is one node.
#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    /// Little-endian two's complement, as pickled.
    Int(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    ByteArray(Vec<u8>),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
}

#[derive(Clone, Copy, Debug)]
enum Item {
    Mark,
    Node(usize),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Item>,
    memo: HashMap<u64, usize>,
}

/// Containers nested deeper than this print as `...`.
const MAX_DEPTH: usize = 64;

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len())?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Some(bytes)
    }

    fn uint(&mut self, n: usize) -> Option<u64> {
        let bytes = self.take(n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b)),
        )
    }

    fn len(&mut self, n: usize) -> Option<usize> {
        usize::try_from(self.uint(n)?).ok()
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(Item::Node(self.nodes.len() - 1));
    }

    fn pop(&mut self) -> Option<usize> {
        match self.stack.pop()? {
            Item::Node(i) => Some(i),
            Item::Mark => None,
        }
    }

    fn top(&self) -> Option<usize> {
        match self.stack.last()? {
            Item::Node(i) => Some(*i),
            Item::Mark => None,
        }
    }

    /// The nodes above the topmost mark, mark removed.
    fn pop_mark(&mut self) -> Option<Vec<usize>> {
        let mark = self.stack.iter().rposition(|i| matches!(i, Item::Mark))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        items
            .into_iter()
            .map(|i| match i {
                Item::Node(n) => Some(n),
                Item::Mark => None,
            })
            .collect()
    }

    fn utf8(&mut self, n: usize) -> Option<Node> {
        let bytes = self.take(n)?;
        Some(Node::Str(std::str::from_utf8(bytes).ok()?.to_string()))
    }

    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        self.take(n).map(<[u8]>::to_vec)
    }

    fn extend(&mut self, target: usize, items: Vec<usize>) -> Option<()> {
        match &mut self.nodes[target] {
            Node::List(v) | Node::Set(v) => v.extend(items),
            _ => return None,
        }
        Some(())
    }

    fn set_items(&mut self, target: usize, items: &[usize]) -> Option<()> {
        if !items.len().is_multiple_of(2) {
            return None;
        }
        let Node::Dict(d) = &mut self.nodes[target] else {
            return None;
        };
        d.extend(items.chunks(2).map(|kv| (kv[0], kv[1])));
        Some(())
    }

    fn memoize(&mut self, at: u64) -> Option<()> {
        let top = self.top()?;
        self.memo.insert(at, top);
        Some(())
    }

    fn recall(&mut self, at: u64) -> Option<()> {
        let node = *self.memo.get(&at)?;
        self.stack.push(Item::Node(node));
        Some(())
    }

    /// Runs the opcodes to STOP; the node left on the stack. `None` at any
    /// opcode outside the plain values, or a malformed pickle.
    fn run(&mut self) -> Option<usize> {
        loop {
            let op = *self.take(1)?.first()?;
            match op {
                0x80 => {
                    self.take(1)?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => {
                    let top = self.pop()?;
                    return (self.stack.is_empty() && self.pos == self.data.len()).then_some(top);
                }
                b'N' => self.push(Node::None),
                0x88 => self.push(Node::Bool(true)),
                0x89 => self.push(Node::Bool(false)),
                b'J' => {
                    let v = self.bytes(4)?;
                    self.push(Node::Int(v));
                }
                b'K' => {
                    let v = self.uint(1)?;
                    self.push(Node::Int(v.to_le_bytes().to_vec()));
                }
                b'M' => {
                    let v = self.uint(2)?;
                    self.push(Node::Int(v.to_le_bytes().to_vec()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.len(1)?
                    } else {
                        self.len(4)?
                    };
                    let v = self.bytes(n)?;
                    self.push(Node::Int(v));
                }
                b'G' => {
                    let raw: [u8; 8] = self.take(8)?.try_into().ok()?;
                    self.push(Node::Float(f64::from_be_bytes(raw)));
                }
                0x8c | b'X' | 0x8d => {
                    let n = match op {
                        0x8c => self.len(1)?,
                        b'X' => self.len(4)?,
                        _ => self.len(8)?,
                    };
                    let s = self.utf8(n)?;
                    self.push(s);
                }
                b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'C' => self.len(1)?,
                        b'B' => self.len(4)?,
                        _ => self.len(8)?,
                    };
                    let v = self.bytes(n)?;
                    self.push(if op == 0x96 {
                        Node::ByteArray(v)
                    } else {
                        Node::Bytes(v)
                    });
                }
                b']' => self.push(Node::List(Vec::new())),
                b')' => self.push(Node::Tuple(Vec::new())),
                b'}' => self.push(Node::Dict(Vec::new())),
                0x8f => self.push(Node::Set(Vec::new())),
                b'(' => self.stack.push(Item::Mark),
                b'a' => {
                    let v = self.pop()?;
                    let target = self.top()?;
                    self.extend(target, vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.extend(target, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?;
                    self.set_items(target, &[k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.set_items(target, &items)?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Dict(Vec::new()));
                    let target = self.top()?;
                    self.set_items(target, &items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return None;
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let items = items
                        .into_iter()
                        .map(|i| match i {
                            Item::Node(n) => Some(n),
                            Item::Mark => None,
                        })
                        .collect::<Option<Vec<usize>>>()?;
                    self.push(Node::Tuple(items));
                }
                0x94 => {
                    let at = self.memo.len() as u64;
                    self.memoize(at)?;
                }
                b'q' => {
                    let at = self.uint(1)?;
                    self.memoize(at)?;
                }
                b'r' => {
                    let at = self.uint(4)?;
                    self.memoize(at)?;
                }
                b'h' => {
                    let at = self.uint(1)?;
                    self.recall(at)?;
                }
                b'j' => {
                    let at = self.uint(4)?;
                    self.recall(at)?;
                }
                b'0' => {
                    self.stack.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                // Globals, reductions, object construction, persistent ids,
                // extensions, out-of-band buffers and the text opcodes of
                // protocols 0 and 1: not a plain value.
                _ => return None,
            }
        }
    }

    /// Appends the `repr` of `node` to `out`, stopping with `...` once
    /// `out` reaches `limit` bytes.
    fn render(&self, node: usize, depth: usize, limit: usize, out: &mut String) {
        if out.len() >= limit || depth > MAX_DEPTH {
            cut(out);
            return;
        }
        let all = |out: &mut String, items: &[usize]| {
            for (n, i) in items.iter().enumerate() {
                if out.len() >= limit {
                    cut(out);
                    break;
                }
                if n > 0 {
                    out.push_str(", ");
                }
                self.render(*i, depth + 1, limit, out);
            }
        };
        match &self.nodes[node] {
            Node::None => out.push_str("None"),
            Node::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Node::Int(v) => out.push_str(&int_repr(v)),
            Node::Float(f) => out.push_str(&float_repr(*f)),
            Node::Str(s) => out.push_str(&str_repr(s)),
            Node::Bytes(b) => out.push_str(&bytes_repr(b)),
            Node::ByteArray(b) => out.push_str(&format!("bytearray({})", bytes_repr(b))),
            Node::List(items) => {
                out.push('[');
                all(out, items);
                out.push(']');
            }
            Node::Tuple(items) => {
                out.push('(');
                all(out, items);
                out.push_str(if items.len() == 1 { ",)" } else { ")" });
            }
            Node::Dict(items) => {
                out.push('{');
                for (n, (k, v)) in items.iter().enumerate() {
                    if out.len() >= limit {
                        cut(out);
                        break;
                    }
                    if n > 0 {
                        out.push_str(", ");
                    }
                    self.render(*k, depth + 1, limit, out);
                    out.push_str(": ");
                    self.render(*v, depth + 1, limit, out);
                }
                out.push('}');
            }
            Node::Set(items) if items.is_empty() => out.push_str("set()"),
            Node::Set(items) => {
                out.push('{');
                all(out, items);
                out.push('}');
            }
            Node::FrozenSet(items) if items.is_empty() => out.push_str("frozenset()"),
            Node::FrozenSet(items) => {
                out.push_str("frozenset({");
                all(out, items);
                out.push_str("})");
            }
        }
    }
}

/// The plain value `bytes` pickle as JSON, if it is one (see the module's
/// documentation for what is plain): tuples, sets and frozensets become
/// arrays, dict keys strings (a key that is not a `str` is written as its
/// `repr`), `bytes` `{"$bytes": "<hex>"}`, an int beyond 64 bits its
/// decimal digits as a string. For the HTTP gateway's results.
pub fn to_json(bytes: &[u8]) -> Option<serde_json::Value> {
    if !looks_pickled(bytes) {
        return None;
    }
    let mut m = Machine {
        data: bytes,
        pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    let top = m.run()?;
    m.json(top, 0)
}

impl Machine<'_> {
    fn json(&self, at: usize, depth: usize) -> Option<serde_json::Value> {
        use serde_json::Value;
        if depth > MAX_DEPTH {
            return None;
        }
        let items = |v: &[usize]| -> Option<Value> {
            v.iter()
                .map(|&i| self.json(i, depth + 1))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
        };
        Some(match &self.nodes[at] {
            Node::None => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(le) => match small_int(le) {
                Some(i) => Value::from(i),
                None => Value::String(int_repr(le)),
            },
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Node::Str(s) => Value::String(s.clone()),
            Node::Bytes(b) | Node::ByteArray(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                serde_json::json!({ "$bytes": hex })
            }
            Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => items(v)?,
            Node::Dict(pairs) => {
                let mut map = serde_json::Map::new();
                for &(k, v) in pairs {
                    let key = match &self.nodes[k] {
                        Node::Str(s) => s.clone(),
                        _ => {
                            let mut out = String::new();
                            self.render(k, depth + 1, 4096, &mut out);
                            out
                        }
                    };
                    map.insert(key, self.json(v, depth + 1)?);
                }
                Value::Object(map)
            }
        })
    }
}

/// A little-endian two's complement int that fits in an i64.
fn small_int(le: &[u8]) -> Option<i64> {
    if le.is_empty() {
        return Some(0);
    }
    if le.len() > 8 {
        return None;
    }
    let negative = le[le.len() - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..le.len()].copy_from_slice(le);
    Some(i64::from_le_bytes(buf))
}

/// A call's arguments, `(args, kwargs)`, pickled (protocol 4) from JSON as
/// the Python client pickles them: `null`, booleans, numbers, strings,
/// arrays (lists) and objects (dicts); an object `{"$ref": "key"}` is a
/// `squall.Reference` to that key (resolved by the executor), and
/// `{"$bytes": "<hex>"}` is `bytes`. Returns the payload and the keys
/// referenced at the top level.
pub fn call_payload(
    args: &[serde_json::Value],
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> Result<(Vec<u8>, Vec<String>), String> {
    let mut out = vec![0x80, 4];
    let mut refs = Vec::new();
    for a in args.iter().chain(kwargs.values()) {
        if let Some(key) = reference(a) {
            if !refs.contains(&key.to_string()) {
                refs.push(key.to_string());
            }
        }
    }
    out.push(b'(');
    for a in args {
        write_json(&mut out, a, 0)?;
    }
    out.push(b't');
    out.push(b'}');
    if !kwargs.is_empty() {
        out.push(b'(');
        for (k, v) in kwargs {
            write_str(&mut out, k);
            write_json(&mut out, v, 0)?;
        }
        out.push(b'u');
    }
    out.extend_from_slice(b"\x86.".as_slice());
    Ok((out, refs))
}

/// One JSON value pickled (protocol 4) as the Python client pickles a
/// plain object it puts (see [`call_payload`] for the forms).
pub fn value_pickle(value: &serde_json::Value) -> Result<Vec<u8>, String> {
    let mut out = vec![0x80, 4];
    write_json(&mut out, value, 0)?;
    out.push(b'.');
    Ok(out)
}

/// The key of `{"$ref": "key"}`.
fn reference(v: &serde_json::Value) -> Option<&str> {
    let map = v.as_object()?;
    match (map.len(), map.get("$ref")) {
        (1, Some(serde_json::Value::String(key))) => Some(key),
        _ => None,
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_json(out: &mut Vec<u8>, v: &serde_json::Value, depth: usize) -> Result<(), String> {
    use serde_json::Value;
    if depth > MAX_DEPTH {
        return Err(format!("arguments nested deeper than {MAX_DEPTH}"));
    }
    match v {
        Value::Null => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                // LONG1: its two's complement bytes, little-endian.
                let bytes = i.to_le_bytes();
                out.extend_from_slice(&[0x8a, 8]);
                out.extend_from_slice(&bytes);
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(&[0x8a, 9]);
                out.extend_from_slice(&u.to_le_bytes());
                out.push(0);
            } else {
                let f = n
                    .as_f64()
                    .ok_or_else(|| format!("number {n} is not representable"))?;
                out.push(b'G');
                out.extend_from_slice(&f.to_be_bytes());
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                for item in items {
                    write_json(out, item, depth + 1)?;
                }
                out.push(b'e');
            }
        }
        Value::Object(map) => {
            if let Some(key) = reference(v) {
                write_str(out, "squall.reference");
                write_str(out, "Reference");
                out.push(0x93); // STACK_GLOBAL
                write_str(out, key);
                out.push(0x85); // TUPLE1
                out.push(b'R'); // REDUCE
                return Ok(());
            }
            if let (1, Some(Value::String(hex))) = (map.len(), map.get("$bytes")) {
                let bytes = unhex(hex).ok_or_else(|| format!("\"$bytes\": {hex:?} is not hex"))?;
                out.push(b'B');
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(&bytes);
                return Ok(());
            }
            out.push(b'}');
            if !map.is_empty() {
                out.push(b'(');
                for (k, v) in map {
                    write_str(out, k);
                    write_json(out, v, depth + 1)?;
                }
                out.push(b'u');
            }
        }
    }
    Ok(())
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod json_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_payload_reads_back_as_python_would_build_it() {
        let args = vec![
            json!(1),
            json!("a"),
            json!([true, null, -3]),
            json!({"$bytes": "00ff"}),
        ];
        let kwargs = json!({"k": 2.5, "big": 18446744073709551615u64, "m": {"x": []}});
        let (payload, refs) = call_payload(&args, kwargs.as_object().unwrap()).unwrap();
        assert!(refs.is_empty());
        assert_eq!(
            describe(&payload).unwrap(),
            "((1, 'a', [True, None, -3], b'\\x00\\xff'), {'big': 18446744073709551615, 'k': 2.5, 'm': {'x': []}})"
        );
        assert_eq!(
            to_json(&payload).unwrap(),
            json!([[1, "a", [true, null, -3], {"$bytes": "00ff"}], {"big": "18446744073709551615", "k": 2.5, "m": {"x": []}}])
        );
    }

    #[test]
    fn references_are_named_and_not_read_as_plain_values() {
        let args = vec![json!({"$ref": "weights"}), json!({"$ref": "weights"})];
        let (payload, refs) = call_payload(&args, &serde_json::Map::new()).unwrap();
        assert_eq!(refs, vec!["weights".to_string()]);
        // A reference is a class instance: the reader names it, runs nothing.
        assert!(describe(&payload)
            .unwrap()
            .starts_with("<pickled Python object"));
    }

    #[test]
    fn bad_bytes_are_an_error() {
        let err = call_payload(&[json!({"$bytes": "zz"})], &serde_json::Map::new()).unwrap_err();
        assert!(err.contains("not hex"), "{err}");
    }
}
