//! Placement: which executor runs a function.
//!
//! An executor is overloaded with `executor_capacity` invocations
//! outstanding from this scheduler, or a reported busy fraction of
//! `busy_permille` or more. Two exceptions raise the count:
//!
//! - For a function an executor runs briefly (by the time between its
//!   completions of it while it had more outstanding), it may have as
//!   many as it runs in [`QUEUED_WORK`], up to [`MAX_DEEPER`] times the
//!   capacity; a function not yet timed there keeps the capacity (so a
//!   burst of a long function after many short ones is not piled onto
//!   one executor).
//!   With 16, tiny calls left each executor idle half the time waiting for
//!   the next invocation (10,000 in flight: 16.7–24.7k calls/s against
//!   23.7–27.6k with 64; `benches/RESULTS.md`).
//! - A coroutine function (`async def`, as executors report them in
//!   `ExecutorReport::async_functions`) does not hold an executor's worker
//!   while it awaits: for one, an executor may have its free coroutine
//!   slots more outstanding (`async_limit` less `async_running`, as it
//!   last reported; the coroutines this scheduler placed since then count
//!   against them through `outstanding`).
//!
//! Among the executors that are not overloaded, the scheduler prefers, in
//! order:
//!
//! 0. a node whose cache is reporting: one whose last report is more than
//!    [`CACHE_LAG`] older than the freshest cache's is stalled or gone, and
//!    the functions placed there would wait on it for their reads;
//! 1. in a DAG, an executor holding no *parallel sibling* of the function
//!    (a function of the same call that is neither upstream nor downstream
//!    of it, so could run at the same time): an executor runs one call at a
//!    time, so two branches placed on one would run one after the other
//!    while another executor idles. An executor busy with a sibling counts
//!    as busy, unless every executor is;
//! 2. the most bytes of the function's referenced keys (`CallArgs::refs`)
//!    already in its node's cache, as the caches last reported: reading
//!    them is then local;
//! 3. in a DAG, for a link of a chain (a function whose only upstream
//!    function has no other downstream one), the executor of that upstream
//!    function: the two run one after the other anyway, and the result
//!    then passes within the executor instead of over a socket (with
//!    `colocate_chains = false`, the opposite: another executor, where
//!    there is one that is not busy; for measuring the hop);
//! 4. the function already warm there (loaded, its class initialised);
//! 5. the fewest invocations outstanding;
//!
//! and breaks remaining ties by rotating over the tied executors, so equal
//! executors share the load. A DAG's functions that reference keys are
//! placed first (then the others, each in the DAG's order), so a branch
//! with data is not pushed off its data's node by a sibling without any.
//! Nothing here is random: the same reports and calls give the same
//! placement.

use crate::registry::{Executor, Registry};
use anna::protocol::compute::{Plan, PlannedFunction, TraceStep};
use anna::protocol::{Address, Key};

/// When an executor counts as overloaded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub capacity: u32,
    pub busy_permille: u16,
    /// A chain link follows its upstream function's executor (rule 3);
    /// `false` (`[scheduler] colocate_chains`) puts it on another one
    /// where there is one, as if that executor held a parallel sibling.
    pub colocate_chains: bool,
}

impl Limits {
    /// Whether `e` takes no more calls of a function; `coroutine`: one of
    /// a coroutine function.
    fn overloaded(&self, e: &Executor, function: &str, coroutine: bool) -> bool {
        let mut capacity = self.capacity;
        // A function it runs briefly: as many as it runs in `QUEUED_WORK`,
        // so the time a completion takes to come back (and the next
        // invocation to go) does not leave it idle; at most `MAX_DEEPER`
        // times the capacity. Others keep the capacity, so their calls
        // still wait here for whichever executor frees first.
        if let Some(per) = e.per_function.get(function).filter(|p| !p.is_zero()) {
            let fits = (QUEUED_WORK.as_nanos() / per.as_nanos()).min(u128::from(u32::MAX)) as u32;
            capacity = capacity.max(fits.min(capacity.saturating_mul(MAX_DEEPER)));
        }
        if coroutine {
            let free = (e.report.async_limit).saturating_sub(e.report.async_running);
            capacity = capacity.saturating_add(free);
        }
        e.outstanding >= capacity || e.report.busy_permille >= self.busy_permille
    }
}

/// The work (by its recent time per function) an executor may have
/// outstanding beyond `executor_capacity`, for short functions.
pub const QUEUED_WORK: std::time::Duration = std::time::Duration::from_millis(5);
/// At most this many times `executor_capacity` outstanding on one executor.
pub const MAX_DEEPER: u32 = 4;

/// How far a cache's last report may lag the freshest cache's before its
/// node is avoided (three report periods at the default).
pub const CACHE_LAG: std::time::Duration = std::time::Duration::from_millis(1500);

/// How good an executor is for a function; higher is better: (its node's
/// cache reporting, holding no parallel sibling, local bytes, follows its
/// chain, warm, fewest outstanding).
type Score = (bool, bool, u64, bool, bool, std::cmp::Reverse<u32>);

/// DAGs with more functions than this are placed without looking for
/// parallel siblings (the search costs a walk of the DAG per function).
pub const SIBLING_SEARCH_LIMIT: usize = 1024;

impl Registry {
    /// Whether the cache of `e`'s node reports like the others (or is not
    /// known at all).
    fn cache_reporting(&self, e: &Executor) -> bool {
        let Some(cache) = self.caches.get(&e.report.node) else {
            return true;
        };
        let freshest = self.caches.values().map(|c| c.last_heard).max();
        freshest.is_none_or(|f| cache.last_heard + CACHE_LAG >= f)
    }

    /// Bytes of `refs` the cache of `e`'s node holds.
    fn local_bytes(&self, e: &Executor, refs: &[Key]) -> u64 {
        let Some(cache) = self.caches.get(&e.report.node) else {
            return 0;
        };
        refs.iter()
            .filter_map(|k| cache.sizes.get(k))
            .fold(0u64, |sum, s| sum.saturating_add(*s))
    }

    /// Whether some executor reported `function` as a coroutine function.
    pub fn is_coroutine(&self, function: &str) -> bool {
        (self.executors.values()).any(|e| e.report.async_functions.iter().any(|f| f == function))
    }

    /// The executor that holds instance `instance` (its state's key):
    /// the live executor with the highest hash of the key and its address
    /// (rendezvous hashing), so every scheduler picks the same one, and an
    /// executor's death moves only its own instances.
    pub fn holder(&self, instance: &str) -> Option<Address> {
        self.executors
            .keys()
            .max_by_key(|a| {
                let mut bytes = Vec::with_capacity(instance.len() + a.as_str().len() + 1);
                bytes.extend_from_slice(instance.as_bytes());
                bytes.push(0);
                bytes.extend_from_slice(a.as_str().as_bytes());
                anna::ring::stable_hash(&bytes)
            })
            .cloned()
    }

    /// The best executor for `function` with arguments referencing `refs`
    /// (preferring `follow`, the executor of the function it follows in a
    /// chain, and avoiding those in `siblings`, which hold functions of the
    /// same call that may run at the same time), or `None` if every
    /// executor is overloaded (or none is known).
    pub fn choose(
        &mut self,
        function: &str,
        refs: &[Key],
        follow: Option<&Address>,
        siblings: &[&Address],
        limits: Limits,
    ) -> Option<(Address, Score)> {
        let coroutine = self.is_coroutine(function);
        let scored: Vec<(&Address, Score)> = self
            .executors
            .iter()
            .filter(|(_, e)| !limits.overloaded(e, function, coroutine))
            .map(|(a, e)| {
                let warm = e.report.warm.iter().any(|w| w == function);
                let score = (
                    self.cache_reporting(e),
                    !siblings.contains(&a),
                    self.local_bytes(e, refs),
                    follow == Some(a),
                    warm,
                    std::cmp::Reverse(e.outstanding),
                );
                (a, score)
            })
            .collect();
        let best = scored.iter().map(|(_, s)| *s).max()?;
        let tied: Vec<&Address> = scored
            .iter()
            .filter(|(_, s)| *s == best)
            .map(|(a, _)| *a)
            .collect();
        let pick = tied[(self.turn % tied.len() as u64) as usize].clone();
        self.turn = self.turn.wrapping_add(1);
        Some((pick, best))
    }

    /// Assigns every function of `plan` an executor, counting each as
    /// outstanding there (so later functions of the same plan see the load
    /// of earlier ones). Functions that reference keys go first, then the
    /// rest, each group in the plan's order. All or nothing: if one
    /// function finds no executor, nothing stays taken and `false` is
    /// returned.
    pub fn place(&mut self, plan: &mut Plan, limits: Limits) -> bool {
        if let (Some(instance), [f]) = (&plan.instance, &mut plan.functions[..]) {
            // An instance's calls all go to its holder, busy or not: it
            // runs them one at a time.
            let Some(executor) = self.holder(instance) else {
                return false;
            };
            self.take(&executor);
            f.executor = executor;
            if let Some(trace) = &mut plan.trace {
                trace.steps = vec![step(f, "holds the instance".to_string())];
            }
            return true;
        }
        let n = plan.functions.len();
        let (with_refs, without): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| !plan.functions[i].args.refs.is_empty());
        let mut placed = vec![false; n];
        for i in with_refs.into_iter().chain(without) {
            let f = &plan.functions[i];
            // A chain link follows its upstream function, if that one is
            // placed already.
            let follow = match f.upstream[..] {
                [u] if placed[usize::from(u)]
                    && plan.functions[usize::from(u)].downstream.len() == 1 =>
                {
                    Some(&plan.functions[usize::from(u)].executor)
                }
                _ => None,
            };
            let mut siblings: Vec<&Address> = if n > 1 && n <= SIBLING_SEARCH_LIMIT {
                let related = related(plan, i);
                (0..n)
                    .filter(|&j| placed[j] && !related[j])
                    .map(|j| &plan.functions[j].executor)
                    .collect()
            } else {
                Vec::new()
            };
            let follow = match follow {
                Some(upstream) if !limits.colocate_chains => {
                    siblings.push(upstream);
                    None
                }
                follow => follow,
            };
            match self.choose(&f.name, &f.args.refs, follow, &siblings, limits) {
                Some((executor, score)) => {
                    self.take(&executor);
                    if let Some(trace) = &mut plan.trace {
                        if trace.steps.len() != n {
                            trace.steps = plan
                                .functions
                                .iter()
                                .map(|f| step(f, String::new()))
                                .collect();
                        }
                        trace.steps[i].executor = executor.clone();
                        trace.steps[i].placed = why(&score, self.executors.len());
                    }
                    plan.functions[i].executor = executor;
                    placed[i] = true;
                }
                None => {
                    for (j, f) in plan.functions.iter_mut().enumerate() {
                        if placed[j] {
                            let executor = std::mem::take(&mut f.executor);
                            self.release(&executor);
                        }
                    }
                    return false;
                }
            }
        }
        true
    }
}

/// Which functions of `plan` are `i` itself, upstream of it or downstream
/// of it (directly or not): those that cannot run at the same time as it.
/// Every other function is a parallel sibling.
fn related(plan: &Plan, i: usize) -> Vec<bool> {
    let mut seen = vec![false; plan.functions.len()];
    seen[i] = true;
    for upward in [true, false] {
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            let f = &plan.functions[j];
            let next = if upward { &f.upstream } else { &f.downstream };
            for &k in next {
                let k = usize::from(k);
                if !seen[k] {
                    seen[k] = true;
                    stack.push(k);
                }
            }
        }
    }
    seen
}

/// A traced function's step as placed, before it runs.
fn step(f: &PlannedFunction, placed: String) -> TraceStep {
    TraceStep {
        function: f.name.clone(),
        executor: f.executor.clone(),
        placed,
        ..TraceStep::default()
    }
}

/// Why an executor with `score` was chosen among `of`, in words, for a
/// call's trace.
fn why(score: &Score, of: usize) -> String {
    let (_, apart, local, follows, warm, outstanding) = score;
    let mut reasons = Vec::new();
    if *local > 0 {
        reasons.push(format!("its cache holds {local} bytes of the references"));
    }
    if *follows {
        reasons.push("runs the upstream function (no hop)".to_string());
    }
    if !apart {
        reasons.push("every executor holds a parallel branch".to_string());
    }
    reasons.push(if *warm { "warm" } else { "cold" }.to_string());
    reasons.push(format!(
        "{} calls outstanding; best of {of} executors",
        outstanding.0
    ));
    reasons.join("; ")
}
