//! `squall.ORSet` and `squall.ORMap` to and from their lattices.
//!
//! A Python observed-remove object is a view plus the changes made to it
//! (`lattices.py`): `_adds` (set) or `_updates` (map), and `_removes`, each
//! element or field removed with the tags the object observed, or `None`
//! where it observed none (made without a read: a blind remove). A put
//! sends the changes only, never the whole view, so writing back a value
//! read earlier does not undo removes made since:
//!
//! - an add or update is tagged with one fresh timestamp of the writer;
//! - a remove removes the tags observed; a blind remove removes the tags
//!   stored when it is put (the store reads the key first,
//!   [`set_needs_stored`]).
//!
//! A tag is `(writer, wall_ms, logical)` in Python.

use super::{class, convert, element_of, py_element, Writer};
use anna::lattice::or_map::Field;
use anna::lattice::{LatticeValue, ORMapLattice, ORSetLattice, Presence, Timestamp, WriterId};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

/// The tags of a Python tag list.
fn tags_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Timestamp>> {
    let mut tags = Vec::new();
    for t in obj.try_iter()? {
        let (writer, wall_ms, logical): (u64, u64, u32) = t?.extract()?;
        tags.push(Timestamp {
            wall_ms,
            logical,
            writer: WriterId(writer),
        });
    }
    Ok(tags)
}

/// The live adds of `presence` as a Python tag list.
fn py_tags<'py>(py: Python<'py>, presence: &Presence) -> PyResult<Bound<'py, PyList>> {
    let tags = presence
        .adds()
        .values()
        .map(|t| (t.writer.0, t.wall_ms, t.logical));
    PyList::new(py, tags)
}

/// The removes an object's `_removes` asks for: per element (field), the
/// presence to merge, from its observed tags or, for a blind remove, from
/// `stored` (`None` if nothing is stored there).
fn removes<'py, K>(
    obj: &Bound<'py, PyAny>,
    key: impl Fn(&Bound<'py, PyAny>) -> PyResult<K>,
    stored: impl Fn(&K) -> Option<&'py Presence>,
) -> PyResult<Vec<(K, Presence)>>
where
    K: 'py,
{
    let mut out = Vec::new();
    for (k, tags) in obj.getattr("_removes")?.cast::<PyDict>()?.iter() {
        let k = key(&k)?;
        let presence = if tags.is_none() {
            stored(&k).map(Presence::removing)
        } else {
            Some(Presence::removed(tags_of(&tags)?))
        };
        if let Some(p) = presence {
            out.push((k, p));
        }
    }
    Ok(out)
}

fn has_blind_remove(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    for tags in obj.getattr("_removes")?.cast::<PyDict>()?.values() {
        if tags.is_none() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether putting this `ORSet` needs the key's stored value: it removes
/// an element it never read.
pub(super) fn set_needs_stored(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    has_blind_remove(obj)
}

/// Whether putting this `ORMap` needs the key's stored value: it removes a
/// field it never read, or a field it updates needs it.
pub(super) fn map_needs_stored(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if has_blind_remove(obj)? {
        return Ok(true);
    }
    for v in obj.getattr("_updates")?.cast::<PyDict>()?.values() {
        if super::needs_stored(&v)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The delta an `ORSet`'s changes make.
pub(super) fn set_to_lattice(
    obj: &Bound<'_, PyAny>,
    stored: Option<&LatticeValue>,
    writer: &mut Writer,
) -> PyResult<LatticeValue> {
    let stored = match stored {
        Some(LatticeValue::ORSet(s)) => Some(s),
        _ => None,
    };
    let mut set = ORSetLattice::default();
    let adds: Vec<Vec<u8>> = (obj.getattr("_adds")?.try_iter()?)
        .map(|e| element_of(&e?))
        .collect::<PyResult<_>>()?;
    if !adds.is_empty() {
        let at = writer.timestamp();
        for e in adds {
            set.add(e, at);
        }
    }
    let stored_presence = |e: &Vec<u8>| stored.and_then(|s| s.entries().get(e));
    for (e, p) in removes(obj, element_of, stored_presence)? {
        set.merge_presence(e, p);
    }
    Ok(LatticeValue::ORSet(set))
}

/// The delta an `ORMap`'s changes make; field values convert as a
/// `Map`'s do.
pub(super) fn map_to_lattice(
    obj: &Bound<'_, PyAny>,
    path: &str,
    stored: Option<&LatticeValue>,
    writer: &mut Writer,
    depth: usize,
) -> PyResult<LatticeValue> {
    let stored = match stored {
        Some(LatticeValue::ORMap(m)) => Some(m),
        _ => None,
    };
    let field_name = |f: &Bound<'_, PyAny>| -> PyResult<String> {
        f.extract()
            .map_err(|_| PyTypeError::new_err("squall.ORMap field names must be str"))
    };
    let mut map = ORMapLattice::default();
    let updates = obj.getattr("_updates")?;
    let updates = updates.cast::<PyDict>()?;
    let at = (!updates.is_empty()).then(|| writer.timestamp());
    for (field, value) in updates.iter() {
        let field = field_name(&field)?;
        let inner_stored = stored.and_then(|m| m.entries().get(&field)?.value.as_ref());
        let sep = if depth == 0 { '\u{0}' } else { '.' };
        let inner_path = format!("{path}{sep}{field}");
        let v = convert(&value, &inner_path, inner_stored, writer, depth + 1)?;
        map.update(field, at.unwrap_or_default(), v);
    }
    let stored_presence = |f: &String| stored.and_then(|m| Some(&m.entries().get(f)?.presence));
    for (field, p) in removes(obj, field_name, stored_presence)? {
        map.merge_field(field, Field::removal(p));
    }
    Ok(LatticeValue::ORMap(map))
}

/// A stored observed-remove set as `squall.ORSet`: its elements, and the
/// tags each was read with (for removes).
pub(super) fn set_from_lattice<'py>(
    py: Python<'py>,
    set: &ORSetLattice<Vec<u8>>,
) -> PyResult<Bound<'py, PyAny>> {
    let items = PyList::empty(py);
    let tags = PyDict::new(py);
    for (e, presence) in set.entries().iter().filter(|(_, p)| p.is_present()) {
        let e = py_element(py, e);
        items.append(&e)?;
        tags.set_item(e, py_tags(py, presence)?)?;
    }
    class(py, "ORSet")?.call_method1("_from_state", (items, tags))
}

/// A stored observed-remove map as `squall.ORMap`: its fields (converted
/// as a `Map`'s are), and the tags each was read with.
pub(super) fn map_from_lattice<'py>(
    py: Python<'py>,
    map: &ORMapLattice<String, LatticeValue>,
    raw: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let fields = PyDict::new(py);
    let tags = PyDict::new(py);
    for (k, f) in map.entries() {
        if let Some(v) = f.visible() {
            fields.set_item(k, super::from_lattice(py, v, raw)?)?;
            tags.set_item(k, py_tags(py, &f.presence)?)?;
        }
    }
    let state = PyTuple::new(py, [fields.into_any(), tags.into_any()])?;
    class(py, "ORMap")?.call_method1("_from_state", state)
}
