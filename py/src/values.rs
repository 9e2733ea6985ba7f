//! The one conversion between [`LatticeValue`] and Python objects.
//!
//! Python side (`squall/lattices.py`): a plain object is cloudpickled and
//! stored as last-writer-wins; an instance of a wrapper class (`Set`,
//! `Counter`, `Map`, `ORSet`, `ORMap`, ...; recognised by its type's
//! `_squall_kind`) is that lattice. Elements of `Set` and `ORSet` are `str`
//! or `bytes`, stored as [`anna::lattice::element`] says, so each comes
//! back as it was put (elements stored as bare bytes, by older clients or
//! the shell, come back as `bytes`). Reading reverses it: last-writer-wins bytes that are a pickle are
//! unpickled, any other last-writer-wins bytes (written by `squall kv put`,
//! or with `squall.Lww`) come back as `bytes`, and every other lattice comes
//! back as its wrapper class. The client module and the executor (a
//! function's `squall.user`) both convert through here, so there is one
//! conversion in the codebase.
//!
//! Writing some lattices needs the writer's identity and memory
//! ([`Writer`]): a timestamp for last-writer-wins, the writer's own running
//! totals for a counter (its entries only ever grow), and the stored clock
//! for a causal write that supersedes what is there. The observed-remove
//! set and map ([`observed`]) write only their changes: adds tagged with a
//! fresh timestamp, removes of the tags the object was read with (or, for
//! an object made without a read, the tags stored when it is put).

pub mod buffers;
mod observed;
pub mod opcodes;

use anna::lattice::element::{self, Element};
use anna::lattice::{
    Causal, CausalVersion, Counter, Dependent, Hlc, LatticeKind, LatticeValue, Lww, MapLattice,
    Max, Min, OrderedSetLattice, Priority, SetLattice, Timestamp, VectorClock, WriterId,
};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PySlice, PyString, PyTuple};
use std::collections::{BTreeMap, HashMap};

/// What a writer needs to turn Python objects into lattice writes.
pub struct Writer {
    hlc: Hlc,
    /// This writer's running (increments, decrements) per counter, by key
    /// and path inside nested maps: merge keeps per-writer maxima, so each
    /// write must carry the writer's whole total, not the delta.
    counters: HashMap<String, (u64, u64)>,
}

impl Writer {
    pub fn new(writer: WriterId) -> Self {
        Writer {
            hlc: Hlc::new(writer),
            counters: HashMap::new(),
        }
    }

    pub fn id(&self) -> WriterId {
        self.hlc.writer()
    }

    /// A fresh timestamp of this writer.
    pub fn timestamp(&mut self) -> Timestamp {
        self.hlc.now(squall_transport::clock::now().as_millis())
    }

    fn under(key: &str, entry: &str) -> bool {
        entry
            .strip_prefix(key)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('\u{0}'))
    }

    /// Forgets this writer's counter totals under `key` (it was deleted:
    /// later puts start afresh).
    pub fn forget(&mut self, key: &str) {
        self.counters.retain(|k, _| !Self::under(key, k));
    }

    /// This writer's counter totals under `key`, to [`Writer::restore`] if
    /// a write fails.
    pub fn save(&self, key: &str) -> Vec<(String, (u64, u64))> {
        self.counters
            .iter()
            .filter(|(k, _)| Self::under(key, k))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Puts back the totals [`Writer::save`] returned.
    pub fn restore(&mut self, key: &str, saved: Vec<(String, (u64, u64))>) {
        self.forget(key);
        self.counters.extend(saved);
    }
}

/// A writer id unique to this process, this moment and `salt`.
pub fn fresh_writer(salt: &str) -> WriterId {
    WriterId(squall_transport::clock::fresh_id(salt))
}

static LATTICES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let module = LATTICES.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("squall.lattices")?.unbind())
    })?;
    module.bind(py).getattr(name)
}

/// `cloudpickle.dumps(obj, protocol=5)`, with its large buffers (a NumPy
/// array's memory) laid in-band aligned and marked, so that a read-only
/// reader can use them where they lie ([`buffers`]).
pub fn pickle<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Vec<u8>> {
    let py = obj.py();
    let dumps = DUMPS.import(py, "cloudpickle", "dumps")?;
    let taker = Bound::new(py, Taker::default())?;
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "protocol"), 5)?;
    kwargs.set_item(intern!(py, "buffer_callback"), &taker)?;
    let main = dumps.call((obj,), Some(&kwargs))?;
    let main = main.cast::<PyBytes>()?.as_bytes();
    let taken = std::mem::take(&mut taker.borrow_mut().taken);
    if taken.is_empty() {
        return Ok(main.to_vec());
    }
    let views = taken
        .iter()
        .map(|view| PyUntypedBuffer::get(view.bind(py)))
        .collect::<PyResult<Vec<_>>>()?;
    let laid: Vec<buffers::Taken<'_>> = views
        .iter()
        .map(|view| buffers::Taken {
            // SAFETY: a C-contiguous buffer (checked in `take_out`) of
            // `len_bytes` bytes, held by `view` and not written while
            // the GIL is held here.
            bytes: unsafe {
                std::slice::from_raw_parts(view.buf_ptr().cast::<u8>(), view.len_bytes())
            },
            readonly: view.readonly(),
        })
        .collect();
    buffers::in_band(main, &laid)
        .ok_or_else(|| PyValueError::new_err("the pickler's buffers do not match its stream"))
}

/// The pickler's `buffer_callback` of one [`pickle`]: keeps a
/// `PickleBuffer` in band (`True`) unless it is contiguous and
/// [`buffers::MIN_BYTES`] or more, in which case its raw view joins
/// `taken`. One small object per pickle, made in Rust.
#[pyclass(module = "squall._native")]
#[derive(Default)]
pub struct Taker {
    taken: Vec<Py<PyAny>>,
}

#[pymethods]
impl Taker {
    fn __call__(&mut self, buffer: &Bound<'_, PyAny>) -> bool {
        let Ok(raw) = buffer.call_method0(intern!(buffer.py(), "raw")) else {
            return true;
        };
        let large = PyUntypedBuffer::get(&raw)
            .is_ok_and(|view| view.is_c_contiguous() && view.len_bytes() >= buffers::MIN_BYTES);
        if large {
            self.taken.push(raw.unbind());
        }
        !large
    }
}

/// `pickle.loads(bytes)`.
pub fn unpickle<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let loads = LOADS.import(py, "pickle", "loads")?;
    loads.call1((PyBytes::new(py, bytes),))
}

/// Values at least this large are unpickled from where they lie
/// ([`ValueBuffer`]) rather than from a copy in a Python `bytes`.
const UNPICKLE_IN_PLACE: usize = 64 << 10;

/// `pickle.loads` of a stored value's bytes: a large one read where it
/// lies (a frame's buffer, or the mapping of a value in shared memory),
/// without first copying it into a Python `bytes`.
fn unpickle_shared<'py>(py: Python<'py>, bytes: &bytes::Bytes) -> PyResult<Bound<'py, PyAny>> {
    if bytes.len() < UNPICKLE_IN_PLACE {
        return unpickle(py, bytes);
    }
    let loads = LOADS.import(py, "pickle", "loads")?;
    let buffer = buffer(py, bytes)?;
    let view = py
        .import("builtins")?
        .getattr("memoryview")?
        .call1((buffer,))?;
    loads.call1((view,))
}

/// The alignment in memory a buffer read in place needs: the largest of a
/// NumPy dtype's (a mapping is page-aligned, and a `bytes`' data 16-byte
/// aligned, so the writer's [`buffers::ALIGN`] from the value's start holds
/// there; a value in the middle of a frame may not).
const MEMORY_ALIGN: usize = 16;

/// `pickle.loads` of `data` (any read-only Python buffer: a `bytes`, a
/// [`ValueBuffer`]) with the buffers the writer marked ([`buffers`]) read
/// where they lie, read-only: a NumPy array among them is a read-only view
/// of `data`. Returns the object and how many of its bytes it shares with
/// `data`. A buffer not aligned in memory after all (a value in the middle
/// of a frame) is copied once instead, so that arrays stay aligned.
pub fn unpickle_readonly<'py>(data: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, usize)> {
    let py = data.py();
    let loads = LOADS.import(py, "pickle", "loads")?;
    let view = PyUntypedBuffer::get(data)?;
    if !view.is_c_contiguous() {
        return Ok((loads.call1((data,))?, 0));
    }
    let base = view.buf_ptr().cast::<u8>().cast_const();
    // SAFETY: a C-contiguous buffer of `len_bytes` bytes held by `view`;
    // stored values are never written.
    let bytes = unsafe { std::slice::from_raw_parts(base, view.len_bytes()) };
    let marked = if bytes.len() >= buffers::MIN_BYTES {
        buffers::marked(bytes)
    } else {
        Vec::new()
    };
    if marked.is_empty() {
        return Ok((loads.call1((data,))?, 0));
    }
    let whole = py
        .import("builtins")?
        .getattr("memoryview")?
        .call1((data,))?;
    let mut shared = 0;
    let mut taken = Vec::with_capacity(marked.len());
    for m in &marked {
        let aligned = (base as usize + m.data.start).is_multiple_of(MEMORY_ALIGN);
        taken.push(if aligned {
            shared += m.data.len();
            whole.get_item(PySlice::new(
                py,
                m.data.start as isize,
                m.data.end as isize,
                1,
            ))?
        } else {
            PyBytes::new(py, &bytes[m.data.clone()]).into_any()
        });
    }
    let main = PyBytes::new(py, &buffers::out_of_band(bytes, &marked));
    let kwargs = PyDict::new(py);
    kwargs.set_item("buffers", PyList::new(py, taken)?)?;
    Ok((loads.call((main,), Some(&kwargs))?, shared))
}

/// `bytes` as a [`ValueBuffer`]: readable by Python where they lie.
pub fn buffer<'py>(py: Python<'py>, bytes: &bytes::Bytes) -> PyResult<Bound<'py, ValueBuffer>> {
    Bound::new(
        py,
        ValueBuffer {
            bytes: bytes.clone(),
        },
    )
}

/// A stored value's bytes as a read-only Python buffer: a `memoryview` of
/// it reads them where they lie, and keeps them alive while it lives.
#[pyclass(module = "squall._native", frozen)]
pub struct ValueBuffer {
    bytes: bytes::Bytes,
}

#[pymethods]
impl ValueBuffer {
    /// The buffer protocol: the bytes, read-only.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        if flags & pyo3::ffi::PyBUF_WRITABLE == pyo3::ffi::PyBUF_WRITABLE {
            return Err(pyo3::exceptions::PyBufferError::new_err(
                "a stored value is read-only",
            ));
        }
        let bytes = &slf.get().bytes;
        // SAFETY: `view` is the buffer Python asks us to fill; it holds a
        // reference to `slf` (which owns the bytes) until it is released,
        // and the bytes never change.
        let filled = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                bytes.as_ptr() as *mut std::os::raw::c_void,
                bytes.len() as pyo3::ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.bytes.len()
    }
}

/// Whether `bytes` look like a pickle (protocol 2 or later): the PROTO
/// opcode first and STOP last. Anything else is returned as raw bytes.
pub fn looks_pickled(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) && bytes.ends_with(b".")
}

/// The lattice kind a Python object stands for: its type's `_squall_kind`,
/// or `None` for a plain object (stored pickled, last-writer-wins).
pub fn kind_of(obj: &Bound<'_, PyAny>) -> PyResult<Option<LatticeKind>> {
    let Some(kind) = obj.get_type().getattr_opt("_squall_kind")? else {
        return Ok(None);
    };
    let name: String = kind.extract()?;
    name.parse::<LatticeKind>()
        .map(Some)
        .map_err(PyValueError::new_err)
}

/// Whether converting `obj` needs the key's stored value: a causal write
/// with no explicit clock supersedes what is stored.
pub fn needs_stored(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    match kind_of(obj)? {
        Some(LatticeKind::SingleKeyCausal | LatticeKind::MultiKeyCausal) => {
            for v in obj.getattr("versions")?.try_iter()? {
                if v?.getattr("clock")?.is_none() {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Some(LatticeKind::Map) => {
            for v in obj.cast::<PyDict>()?.values() {
                if needs_stored(&v)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Some(LatticeKind::ORSet) => observed::set_needs_stored(obj),
        Some(LatticeKind::ORMap) => observed::map_needs_stored(obj),
        _ => Ok(false),
    }
}

fn bytes_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    obj.extract::<Vec<u8>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "expected bytes or str, not {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })
}

fn byte_items(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    obj.try_iter()?.map(|i| bytes_of(&i?)).collect()
}

/// A set element's stored form: a `str` marked as text, `bytes` as they
/// are (see [`anna::lattice::element`]).
fn element_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(element::encode_text(s.to_str()?));
    }
    Ok(element::encode_bytes(&bytes_of(obj)?))
}

/// A stored set element as Python: `str` or `bytes`.
fn py_element<'py>(py: Python<'py>, stored: &[u8]) -> Bound<'py, PyAny> {
    match element::decode(stored) {
        Element::Text(text) => PyString::new(py, text).into_any(),
        Element::Bytes(bytes) => PyBytes::new(py, &bytes).into_any(),
    }
}

fn clock_of(obj: &Bound<'_, PyAny>) -> PyResult<VectorClock> {
    let dict = obj.cast::<PyDict>()?;
    let mut entries = Vec::with_capacity(dict.len());
    for (w, n) in dict.iter() {
        entries.push((WriterId(w.extract()?), n.extract()?));
    }
    Ok(VectorClock::new(entries))
}

/// The clock a causal write without one gets: the merge of every stored
/// version's clock, plus one event of this writer.
fn superseding(stored: Option<&LatticeValue>, writer: WriterId) -> VectorClock {
    let mut clock = match stored {
        Some(LatticeValue::SingleKeyCausal(c)) => c.vector_clock(),
        Some(LatticeValue::MultiKeyCausal(c)) => c.vector_clock(),
        _ => VectorClock::default(),
    };
    clock.increment(writer);
    clock
}

/// Converts `obj` into the lattice value to merge into key `key`.
/// `stored` is the key's current value where [`needs_stored`] asked for it.
pub fn to_lattice(
    obj: &Bound<'_, PyAny>,
    key: &str,
    stored: Option<&LatticeValue>,
    writer: &mut Writer,
) -> PyResult<LatticeValue> {
    convert(obj, key, stored, writer, 0)
}

fn convert(
    obj: &Bound<'_, PyAny>,
    path: &str,
    stored: Option<&LatticeValue>,
    writer: &mut Writer,
    depth: usize,
) -> PyResult<LatticeValue> {
    if depth >= anna::lattice::value::MAX_NESTING {
        return Err(PyValueError::new_err(format!(
            "lattice maps nested deeper than {}",
            anna::lattice::value::MAX_NESTING
        )));
    }
    let Some(kind) = kind_of(obj)? else {
        let bytes = pickle(obj)?;
        return Ok(LatticeValue::Lww(Lww::new(writer.timestamp(), bytes)));
    };
    Ok(match kind {
        LatticeKind::Lww => {
            let bytes = bytes_of(&obj.getattr("value")?)?;
            LatticeValue::Lww(Lww::new(writer.timestamp(), bytes))
        }
        LatticeKind::Set => {
            let items: PyResult<Vec<Vec<u8>>> = obj.try_iter()?.map(|i| element_of(&i?)).collect();
            LatticeValue::Set(SetLattice::new(items?))
        }
        LatticeKind::OrderedSet => {
            LatticeValue::OrderedSet(OrderedSetLattice::new(byte_items(obj)?))
        }
        LatticeKind::Max => LatticeValue::Max(Max::new(obj.extract()?)),
        LatticeKind::Min => LatticeValue::Min(Min::new(obj.extract()?)),
        LatticeKind::Counter => {
            let delta: i64 = obj.extract()?;
            let totals = writer.counters.entry(path.to_string()).or_default();
            if delta >= 0 {
                totals.0 = totals.0.saturating_add(delta.unsigned_abs());
            } else {
                totals.1 = totals.1.saturating_add(delta.unsigned_abs());
            }
            let (up, down) = *totals;
            let mut c = Counter::default();
            c.increment(writer.id(), up);
            c.decrement(writer.id(), down);
            LatticeValue::Counter(c)
        }
        LatticeKind::Map => {
            let mut map = MapLattice::default();
            let stored_map = match stored {
                Some(LatticeValue::Map(m)) => Some(m),
                _ => None,
            };
            for (field, value) in obj.cast::<PyDict>()?.iter() {
                let field: String = field
                    .extract()
                    .map_err(|_| PyTypeError::new_err("squall.Map field names must be str"))?;
                let inner_stored = stored_map.and_then(|m| m.get(&field));
                let sep = if depth == 0 { '\u{0}' } else { '.' };
                let inner_path = format!("{path}{sep}{field}");
                let v = convert(&value, &inner_path, inner_stored, writer, depth + 1)?;
                map.insert(field, v);
            }
            LatticeValue::Map(map)
        }
        LatticeKind::Priority => {
            let p: f64 = obj.getattr("priority")?.extract()?;
            LatticeValue::Priority(Priority::new(p, bytes_of(&obj.getattr("value")?)?))
        }
        LatticeKind::VectorClock => LatticeValue::VectorClock(clock_of(obj)?),
        LatticeKind::SingleKeyCausal | LatticeKind::MultiKeyCausal => {
            causal(obj, kind, stored, writer)?
        }
        LatticeKind::ORSet => observed::set_to_lattice(obj, stored, writer)?,
        LatticeKind::ORMap => observed::map_to_lattice(obj, path, stored, writer, depth)?,
    })
}

fn causal(
    obj: &Bound<'_, PyAny>,
    kind: LatticeKind,
    stored: Option<&LatticeValue>,
    writer: &mut Writer,
) -> PyResult<LatticeValue> {
    let mut single = Causal::<Vec<u8>>::default();
    let mut multi = Causal::<Dependent>::default();
    for v in obj.getattr("versions")?.try_iter()? {
        let v = v?;
        let value = bytes_of(&v.getattr("value")?)?;
        let clock = match v.getattr("clock")? {
            c if c.is_none() => superseding(stored, writer.id()),
            c => clock_of(&c)?,
        };
        if kind == LatticeKind::SingleKeyCausal {
            anna::lattice::Lattice::merge(&mut single, Causal::new(clock, value));
        } else {
            let mut dependencies = BTreeMap::new();
            for (k, c) in v.getattr("dependencies")?.cast::<PyDict>()?.iter() {
                dependencies.insert(k.extract::<String>()?, clock_of(&c)?);
            }
            let payload = Dependent {
                dependencies,
                value,
            };
            anna::lattice::Lattice::merge(&mut multi, Causal::new(clock, payload));
        }
    }
    Ok(if kind == LatticeKind::SingleKeyCausal {
        LatticeValue::SingleKeyCausal(single)
    } else {
        LatticeValue::MultiKeyCausal(multi)
    })
}

fn py_clock<'py>(py: Python<'py>, clock: &VectorClock) -> PyResult<Bound<'py, PyAny>> {
    let dict = PyDict::new(py);
    for (w, n) in clock.reveal() {
        dict.set_item(w.0, *n)?;
    }
    class(py, "VectorClock")?.call1((dict,))
}

fn py_bytes_list<'py, 'a>(
    py: Python<'py>,
    items: impl IntoIterator<Item = &'a Vec<u8>>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, items.into_iter().map(|b| PyBytes::new(py, b)))
}

fn py_versions<'py, 'a, P: Ord + Clone + 'a>(
    py: Python<'py>,
    versions: impl Iterator<Item = &'a CausalVersion<P>>,
    parts: impl Fn(&'a P) -> (&'a [u8], Option<&'a BTreeMap<String, VectorClock>>),
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for v in versions {
        let (value, deps) = parts(&v.payload);
        let dict = PyDict::new(py);
        for (k, c) in deps.into_iter().flatten() {
            dict.set_item(k, py_clock(py, c)?)?;
        }
        let item = PyTuple::new(
            py,
            [
                PyBytes::new(py, value).into_any(),
                py_clock(py, &v.clock)?,
                dict.into_any(),
            ],
        )?;
        list.append(item)?;
    }
    Ok(list)
}

/// A stored value as [`from_lattice`] converts it, except that a pickled
/// last-writer-wins value is read with [`unpickle_readonly`]: its large
/// buffers read where they lie, read-only.
pub fn from_lattice_readonly<'py>(
    py: Python<'py>,
    value: &LatticeValue,
) -> PyResult<Bound<'py, PyAny>> {
    match value {
        LatticeValue::Lww(l) if looks_pickled(l.value()) => {
            Ok(unpickle_readonly(buffer(py, l.bytes())?.as_any())?.0)
        }
        _ => from_lattice(py, value, false),
    }
}

/// Converts a stored value into its Python object. With `raw`, a
/// last-writer-wins value comes back as `squall.Lww` (bytes and timestamp)
/// instead of being unpickled.
pub fn from_lattice<'py>(
    py: Python<'py>,
    value: &LatticeValue,
    raw: bool,
) -> PyResult<Bound<'py, PyAny>> {
    match value {
        LatticeValue::Lww(l) => {
            if raw {
                let ts = l.timestamp();
                let stamp = (ts.wall_ms, ts.logical, ts.writer.0);
                class(py, "Lww")?.call1((PyBytes::new(py, l.value()), stamp))
            } else if looks_pickled(l.value()) {
                unpickle_shared(py, l.bytes())
            } else {
                Ok(PyBytes::new(py, l.value()).into_any())
            }
        }
        LatticeValue::Set(s) => {
            let items = PyList::new(py, s.reveal().iter().map(|e| py_element(py, e)))?;
            class(py, "Set")?.call1((items,))
        }
        LatticeValue::OrderedSet(s) => {
            class(py, "OrderedSet")?.call1((py_bytes_list(py, s.reveal())?,))
        }
        LatticeValue::Max(m) => match m.reveal() {
            Some(n) => class(py, "Max")?.call1((*n,)),
            None => Ok(py.None().into_bound(py)),
        },
        LatticeValue::Min(m) => match m.reveal() {
            Some(n) => class(py, "Min")?.call1((*n,)),
            None => Ok(py.None().into_bound(py)),
        },
        LatticeValue::Counter(c) => class(py, "Counter")?.call1((c.value(),)),
        LatticeValue::Map(m) => {
            let dict = PyDict::new(py);
            for (field, v) in m.reveal() {
                dict.set_item(field, from_lattice(py, v, raw)?)?;
            }
            class(py, "Map")?.call1((dict,))
        }
        LatticeValue::VectorClock(vc) => py_clock(py, vc),
        LatticeValue::SingleKeyCausal(c) => {
            let versions = py_versions(py, c.versions(), |p| (p.as_slice(), None))?;
            class(py, "SingleKeyCausal")?.call_method1("_from_versions", (versions,))
        }
        LatticeValue::MultiKeyCausal(c) => {
            let versions = py_versions(py, c.versions(), |p| {
                (p.value.as_slice(), Some(&p.dependencies))
            })?;
            class(py, "MultiKeyCausal")?.call_method1("_from_versions", (versions,))
        }
        LatticeValue::Priority(p) => match p.reveal() {
            Some((prio, v)) => class(py, "Priority")?.call1((prio, PyBytes::new(py, v))),
            None => Ok(py.None().into_bound(py)),
        },
        LatticeValue::ORSet(s) => observed::set_from_lattice(py, s),
        LatticeValue::ORMap(m) => observed::map_from_lattice(py, m, raw),
    }
}
