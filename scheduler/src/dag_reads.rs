//! Reading DAG definitions from the KVS with the embedded client, and
//! answering the calls that waited for them.

use crate::records::{needed, Waiting};
use crate::scheduler::Scheduler;
use anna::client::{ClientError, Completion, OpOutput};
use anna::lattice::{KeyState, LatticeValue};
use anna::protocol::compute::{dag_key, decode_value, CallErrorKind, Dag, DagCallRequest};
use anna::role::Outbox;
use anna::time::Time;
use std::sync::Arc;

impl Scheduler {
    /// Starts reading DAG `name`'s definition for the calls `waiting`.
    pub(crate) fn start_dag_read(
        &mut self,
        now: Time,
        name: String,
        waiting: Vec<Waiting<DagCallRequest>>,
        out: &mut Outbox,
    ) {
        self.stats.dag_reads += 1;
        let at_least = needed(&waiting);
        let op = (self.client).read_state(now, dag_key(&name), at_least.clone(), out);
        self.dags.start(name, op, waiting, at_least);
    }

    /// Handles finished KVS operations: DAG reads plan (or fail) the calls
    /// that waited; split reads admit theirs; writes of response keys need
    /// nothing more.
    pub(crate) fn on_completions(&mut self, now: Time, done: Vec<Completion>, out: &mut Outbox) {
        for done in done {
            if self.on_trigger_read(now, &done, out) {
                continue;
            }
            let (op, result) = done;
            if let Some((name, fetch)) = self.splits.finish(op) {
                self.on_split_read(now, name, fetch, result, out);
                continue;
            }
            let Some((name, fetch)) = self.dags.finish(op) else {
                if let Err(e) = result {
                    tracing::warn!(%e, "writing a failed call's response key failed");
                }
                continue;
            };
            if fetch.stale {
                // The DAG changed while this read was out: read it again.
                self.start_dag_read(now, name, fetch.waiting, out);
                continue;
            }
            match read_dag(&name, result) {
                Ok((dag, version)) => {
                    let dag = Arc::new(dag);
                    self.dags.insert(name, dag.clone(), version, now);
                    for w in fetch.waiting {
                        self.plan_dag(now, &dag, w.req, w.deadline_ms, out);
                    }
                }
                Err((kind, message)) => {
                    match kind {
                        CallErrorKind::UnknownDag => self.stats.unknown_dags += 1,
                        CallErrorKind::Timeout => self.stats.timeouts += 1,
                        _ => self.stats.bad_dags += 1,
                    }
                    for w in fetch.waiting {
                        let (id, reply) = (w.req.id, &w.req.reply);
                        self.answer_error(now, id, reply, kind, message.clone(), None, out);
                    }
                }
            }
        }
    }
}

/// The DAG a read of `name`'s key found (with the state it was read
/// from), or the error its callers get.
fn read_dag(
    name: &str,
    result: Result<OpOutput, ClientError>,
) -> Result<(Dag, KeyState), (CallErrorKind, String)> {
    let key = dag_key(name);
    let (value, state) = match result {
        Ok(OpOutput::State(state)) => (
            Ok(OpOutput::Value(state.visible().map(|v| v.into_owned()))),
            state,
        ),
        other => (other, KeyState::default()),
    };
    let dag = match value {
        Ok(OpOutput::Value(Some(LatticeValue::Lww(stored)))) => decode_value::<Dag>(stored.value())
            .ok_or_else(|| {
                let message = format!(
                    "the definition of DAG `{name}` (key `{key}`) does not decode as a DAG; \
                     register it again"
                );
                (CallErrorKind::BadFunction, message)
            }),
        Ok(OpOutput::Value(Some(other))) => Err((
            CallErrorKind::BadFunction,
            format!(
                "key `{key}` holds a {} value, not a last-writer-wins DAG definition",
                other.kind().name()
            ),
        )),
        Ok(OpOutput::Value(None)) => Err((
            CallErrorKind::UnknownDag,
            format!("no DAG is registered under `{name}`"),
        )),
        Ok(OpOutput::Written { .. } | OpOutput::State(_)) => Err((
            CallErrorKind::BadFunction,
            format!("reading key `{key}` answered as a write"),
        )),
        Err(e) => Err((
            CallErrorKind::Timeout,
            format!("could not read the definition of DAG `{name}`: {e}"),
        )),
    }?;
    Ok((dag, state))
}
