//! Plans: a call's functions, their arguments and the edges between them,
//! before placement fills in the executors.
//!
//! A single call is a plan of one function. A DAG call's plan lists the
//! DAG's functions in registration order; `upstream` of each lists its
//! upstream functions in the order the DAG's `connections` list the edges
//! (the order the function takes their results in), `downstream` likewise.
//! A DAG is refused if an edge names a function it lacks, if it has a
//! cycle, a repeated function or edge, or if the call names an argument for
//! a function the DAG lacks.

use anna::protocol::compute::{CallArgs, CallRequest, Dag, DagCallRequest, Plan, PlannedFunction};
use anna::protocol::Address;
use std::collections::{BTreeMap, BTreeSet};

/// Why a DAG call cannot be planned (a `BadArguments` error to the caller).
pub(crate) type PlanError = String;

/// The plan of a single call, executor not yet chosen.
pub(crate) fn single(req: CallRequest, deadline_ms: u64, scheduler: &Address) -> Plan {
    Plan {
        id: req.id,
        dag: None,
        functions: vec![PlannedFunction {
            name: req.function,
            executor: Address::default(),
            args: req.args,
            upstream: Vec::new(),
            downstream: Vec::new(),
        }],
        reply: req.reply,
        deadline_ms,
        attempt: 0,
        scheduler: scheduler.clone(),
        session: req.session,
        written: Default::default(),
        consistency: req.consistency,
        pinned: Default::default(),
        output: Vec::new(),
        instance: req.instance,
        trace: req.trace.then(Default::default),
    }
}

/// The plan of a call of `dag`, executors not yet chosen.
pub(crate) fn dag(
    dag: &Dag,
    req: DagCallRequest,
    deadline_ms: u64,
    scheduler: &Address,
) -> Result<Plan, PlanError> {
    if dag.functions.is_empty() {
        return Err(format!("DAG `{}` has no functions", dag.name));
    }
    if dag.functions.len() > usize::from(u16::MAX) {
        return Err(format!(
            "DAG `{}` has {} functions; at most {} are supported",
            dag.name,
            dag.functions.len(),
            u16::MAX
        ));
    }
    let mut index: BTreeMap<&str, u16> = BTreeMap::new();
    for (i, f) in dag.functions.iter().enumerate() {
        if index.insert(f.as_str(), i as u16).is_some() {
            return Err(format!("DAG `{}` lists function `{f}` twice", dag.name));
        }
    }
    let mut functions: Vec<PlannedFunction> = dag
        .functions
        .iter()
        .map(|name| PlannedFunction {
            name: name.clone(),
            executor: Address::default(),
            args: CallArgs::default(),
            upstream: Vec::new(),
            downstream: Vec::new(),
        })
        .collect();
    for (from, to) in &dag.connections {
        let (Some(&u), Some(&d)) = (index.get(from.as_str()), index.get(to.as_str())) else {
            return Err(format!(
                "DAG `{}`: connection `{from}` -> `{to}` names a function the DAG lacks",
                dag.name
            ));
        };
        if functions[usize::from(d)].upstream.contains(&u) {
            return Err(format!(
                "DAG `{}`: connection `{from}` -> `{to}` is listed twice",
                dag.name
            ));
        }
        functions[usize::from(u)].downstream.push(d);
        functions[usize::from(d)].upstream.push(u);
    }
    if let Some(f) = on_cycle(&functions) {
        return Err(format!(
            "DAG `{}` has a cycle through `{}`",
            dag.name,
            functions[usize::from(f)].name
        ));
    }
    let mut named: BTreeSet<String> = BTreeSet::new();
    for (name, args) in req.args {
        let Some(&i) = index.get(name.as_str()) else {
            return Err(format!(
                "arguments given for `{name}`, which DAG `{}` does not contain",
                dag.name
            ));
        };
        if !named.insert(name.clone()) {
            return Err(format!("arguments for `{name}` given twice"));
        }
        functions[usize::from(i)].args = args;
    }
    Ok(Plan {
        id: req.id,
        dag: Some(req.dag),
        functions,
        reply: req.reply,
        deadline_ms,
        attempt: 0,
        scheduler: scheduler.clone(),
        session: req.session,
        written: Default::default(),
        consistency: req.consistency,
        pinned: Default::default(),
        output: Vec::new(),
        instance: None,
        trace: req.trace.then(Default::default),
    })
}

/// A function on a cycle, if the graph has one (Kahn's algorithm: what is
/// left after repeatedly removing functions with no remaining upstream).
fn on_cycle(functions: &[PlannedFunction]) -> Option<u16> {
    let mut waiting: Vec<usize> = functions.iter().map(|f| f.upstream.len()).collect();
    let mut ready: Vec<usize> = (0..functions.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &d in &functions[i].downstream {
            let d = usize::from(d);
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    waiting.iter().position(|&w| w > 0).map(|i| i as u16)
}
