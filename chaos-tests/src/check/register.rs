//! Linearizability checker for a single read/write register.
//!
//! The register models one container-registry tag: its value is an optional
//! digest string (`None` = the tag does not exist). Clients write (put or
//! delete the tag) and read it; the chaos tests record what each client saw,
//! and [`check`] decides whether some sequential order of those operations,
//! consistent with real time, explains every read.
//!
//! # Algorithm
//!
//! Wing & Gong's search with Lowe's just-in-time linearization, as used by
//! Knossos and porcupine:
//!
//! * Every op becomes a *call* event at `invoke` and, if its outcome is known,
//!   a *return* event at `complete`. Events are sorted by time; at equal
//!   timestamps calls sort before returns, so two ops that touch at one instant
//!   count as concurrent (the clock cannot tell them apart).
//! * The events form a doubly linked list. A depth-first search walks the list
//!   from its head: at a call it may *linearize* that op (apply it to the
//!   register now, and unlink its call and return); reaching a return whose op
//!   is still unlinearized means the op's deadline has passed, so the search
//!   backtracks. Success is when every op with a known outcome is linearized.
//! * A cache of visited `(set of linearized ops, register value)` pairs prunes
//!   the search: two paths reaching the same pair have the same future.
//! * A read that can see the current value is placed at once, without trying
//!   the alternatives: reads do not change the register, so placing one early
//!   never hurts the rest (this cuts the states a failing search must exhaust
//!   by an order of magnitude).
//!
//! Writes with an unknown outcome never expire (their return is at +infinity)
//! and may also never take effect. Letting the search try them at every step
//! would multiply the state space by the subsets of pending unknown writes, so
//! they are handled by a register-specific reduction instead: in any legal
//! order an unknown write `W(v)` is either unobserved (then dropping it keeps
//! the order legal) or immediately followed by the first read that observes
//! it. So the search only ever places an unknown write together with a read of
//! its value, when the register does not already hold that value.
//!
//! # Reporting
//!
//! On failure the search knows the *frontier*: the furthest return event any
//! path reached. The history cut just before that return is linearizable (a
//! path got there), and the cut just after it is not (no path got past it,
//! and the search was exhaustive), so the op owning that return is the
//! culprit: the first op whose response cannot be explained by any order of
//! what happened before it. This is the same answer a binary search over
//! history prefixes would give, without re-running the search. (Prefixes by
//! invocation order are not used: a read can observe a concurrent write that
//! was invoked after it, so such prefixes are not monotone.)

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// One operation on a register, as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegOp {
    /// Index into the caller's history (for reporting).
    pub id: usize,
    /// Which client process issued it (for reporting).
    pub process: usize,
    /// When it was invoked and when its response arrived, on one monotonic
    /// clock (e.g. microseconds since the test started).
    pub invoke: u64,
    /// `None`: the outcome is unknown (timeout, connection cut): the op may
    /// have taken effect at any point after `invoke`, or never.
    pub complete: Option<u64>,
    pub kind: RegKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegKind {
    /// Set the value (`None` = delete the tag).
    Write(Option<String>),
    /// A read that returned this value (`None` = the tag did not exist).
    Read(Option<String>),
}

/// Why a history is not linearizable.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The op that could not be placed: every linearization of the ops before
    /// it leaves no legal place for it.
    pub culprit: RegOp,
    /// A small excerpt of the history that shows the problem: the culprit, the
    /// ops concurrent with it, and the writes whose values the culprit could
    /// have observed or should have observed (the last completed writes before
    /// it). At most ~12 ops, sorted by invoke.
    pub excerpt: Vec<RegOp>,
    /// Human-readable explanation, one paragraph.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        for op in &self.excerpt {
            // Mark the culprit so the eye finds it in the excerpt.
            let marker = if *op == self.culprit { "->" } else { "  " };
            let complete = match op.complete {
                Some(t) => t.to_string(),
                None => "?".to_string(),
            };
            write!(
                f,
                "\n{marker} op {:<6} process {:<4} [{}, {}]  {}",
                op.id,
                op.process,
                op.invoke,
                complete,
                describe_kind(&op.kind)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// Give up after visiting this many search states: the search is exponential
/// in the worst case, and a test must not hang on a pathological history.
const MAX_STATES: usize = 5_000_000;
/// Also give up before the visited-state cache outgrows this many bytes; each
/// entry holds a bitset over all ops, so long histories cost more per state.
const MAX_CACHE_BYTES: usize = 1 << 30;
/// Most ops shown in a violation's excerpt.
const EXCERPT_CAP: usize = 12;
/// Most distinct register values remembered (and printed) at the frontier.
const MAX_FRONTIER_VALUES: usize = 8;

/// Checks that the ops are linearizable for a register that starts at `initial`.
///
/// Ops that definitely failed must be left out by the caller; reads with
/// unknown outcome too (they constrain nothing and are ignored if present).
/// Writes with unknown outcome (`complete == None`) may be linearized anywhere
/// after their invoke, or not at all.
///
/// # Errors
///
/// A [`Violation`] when no legal order exists, naming the first op whose
/// response cannot be explained. Also when the search gives up (more than
/// five million states, or its cache would pass 1 GiB): then the reason says
/// it was abandoned, and the history was not shown to be linearizable. Also
/// for a malformed op that completes before it is invoked.
pub fn check(initial: Option<String>, ops: &[RegOp]) -> Result<(), Violation> {
    check_with_limit(initial, ops, MAX_STATES)
}

/// [`check`] with an explicit bound on visited states (tests lower it to
/// exercise the give-up path).
fn check_with_limit(
    initial: Option<String>,
    ops: &[RegOp],
    max_states: usize,
) -> Result<(), Violation> {
    // A response before its invocation means the recording clock is broken;
    // any verdict on such a history would be meaningless, so say so.
    if let Some(bad) = ops
        .iter()
        .find(|op| op.complete.is_some_and(|c| c < op.invoke))
    {
        return Err(Violation {
            culprit: bad.clone(),
            excerpt: vec![bad.clone()],
            reason: format!(
                "Malformed history: op {} (process {}) completes at {} before it was invoked at {}; \
                 the recorded timestamps are not from one monotonic clock, so nothing can be checked.",
                bad.id,
                bad.process,
                bad.complete.unwrap_or_default(),
                bad.invoke
            ),
        });
    }

    // Reads with unknown outcome could have returned anything at any time:
    // they constrain nothing, so drop them rather than trust their value.
    let kept: Vec<usize> = (0..ops.len())
        .filter(|&i| !(matches!(ops[i].kind, RegKind::Read(_)) && ops[i].complete.is_none()))
        .collect();

    // Intern register values so a search state is a small integer, not a string.
    let mut values = Interner::default();
    let initial_id = values.intern(&initial);
    for &i in &kept {
        if let RegKind::Write(v) = &ops[i].kind {
            values.intern(v);
        }
    }

    // A read of a value nobody wrote can never be explained; report it without
    // searching (the earliest such read, as it is the first sign of trouble).
    let mut steps = Vec::with_capacity(kept.len());
    let mut phantom: Option<usize> = None;
    for &i in &kept {
        match &ops[i].kind {
            RegKind::Write(v) => steps.push(Step::Write(values.id(v).unwrap_or(initial_id))),
            RegKind::Read(v) => match values.id(v) {
                Some(id) => steps.push(Step::Read(id)),
                None => {
                    steps.push(Step::Read(initial_id));
                    if phantom.is_none_or(|p| ops[i].invoke < ops[p].invoke) {
                        phantom = Some(i);
                    }
                }
            },
        }
    }
    if let Some(p) = phantom {
        let culprit = &ops[p];
        return Err(Violation {
            culprit: culprit.clone(),
            excerpt: excerpt(ops, &kept, p),
            reason: format!(
                "Not linearizable: read {} (process {}, {}) returned {}, a value that no write in the \
                 history ever wrote and that is not the initial value {}.",
                culprit.id,
                culprit.process,
                window(culprit),
                describe_value(read_value(culprit)),
                describe_value(&initial)
            ),
        });
    }

    let problem = Problem::new(ops, kept, steps, initial_id);
    match problem.search(max_states) {
        Outcome::Linearizable => Ok(()),
        Outcome::Stuck {
            culprit,
            values: held,
        } => {
            let op_index = problem.kept[culprit];
            Err(Violation {
                culprit: ops[op_index].clone(),
                excerpt: excerpt(ops, &problem.kept, op_index),
                reason: stuck_reason(&ops[op_index], &held, &values),
            })
        }
        Outcome::Abandoned {
            visited,
            limit,
            culprit,
            values: held,
        } => {
            // Without a furthest point (cannot happen: the first step records one)
            // fall back to the first op so the caller still gets a report.
            let op_index = culprit.map_or(problem.kept.first().copied().unwrap_or(0), |c| {
                problem.kept[c]
            });
            let op = &ops[op_index];
            Err(Violation {
                culprit: op.clone(),
                excerpt: excerpt(ops, &problem.kept, op_index),
                reason: format!(
                    "Linearizability search abandoned after visiting {visited} states (limit {limit}): \
                     the history is too concurrent to decide, so it was NOT shown to be linearizable. \
                     The search got no further than the response of op {} (process {}, {}), {}; the \
                     register could then hold {}.",
                    op.id,
                    op.process,
                    window(op),
                    describe_kind(&op.kind),
                    describe_values(&held, &values)
                ),
            })
        }
    }
}

/// Explains why the search could not get past `culprit`'s response.
fn stuck_reason(culprit: &RegOp, held: &[u32], values: &Interner) -> String {
    match &culprit.kind {
        RegKind::Read(v) => format!(
            "Not linearizable: read {} (process {}, {}) returned {}, but no order of the operations up to \
             its response that respects real time lets it see that value: wherever it can be placed the \
             register holds something else (just before its response it could only hold {}). The excerpt \
             shows the read, the operations concurrent with it, the last writes and reads that completed \
             before it, and the writes of the value it returned.",
            culprit.id,
            culprit.process,
            window(culprit),
            describe_value(v),
            describe_values(held, values)
        ),
        // A write can always be placed at the last moment before its response,
        // so the frontier is never a write; kept for completeness.
        RegKind::Write(v) => format!(
            "Not linearizable: write {} (process {}, {}) of {} must take effect before its response, but \
             no order of the operations up to that response leaves room for it (the register could hold {}).",
            culprit.id,
            culprit.process,
            window(culprit),
            describe_value(v),
            describe_values(held, values)
        ),
    }
}

/// One op reduced to what the search needs: its effect on the interned value.
#[derive(Clone, Copy, Debug)]
enum Step {
    Write(u32),
    Read(u32),
}

/// Distinct register values, numbered in order of first sight.
#[derive(Default)]
struct Interner {
    ids: HashMap<Option<String>, u32>,
    values: Vec<Option<String>>,
}

impl Interner {
    fn intern(&mut self, value: &Option<String>) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        // More than u32::MAX distinct values would not fit in memory anyway.
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.ids.insert(value.clone(), id);
        self.values.push(value.clone());
        id
    }

    fn id(&self, value: &Option<String>) -> Option<u32> {
        self.ids.get(value).copied()
    }

    fn value(&self, id: u32) -> Option<&Option<String>> {
        self.values.get(id as usize)
    }
}

/// Sentinel for "no node".
const NIL: usize = usize::MAX;

/// The search input: ops (indexed locally, 0..n, in the caller's order) and
/// their events in time order. Events are numbered by their position in the
/// sorted order, so comparing node numbers compares times.
struct Problem {
    /// Local op index -> index into the caller's slice.
    kept: Vec<usize>,
    steps: Vec<Step>,
    initial: u32,
    /// Ops with a known outcome; the search succeeds once all are placed.
    known: usize,
    /// Per event node: its op, and whether it is the call (else the return).
    node_op: Vec<usize>,
    node_is_call: Vec<bool>,
    /// Per call node: its return node, or NIL for unknown-outcome ops.
    node_return: Vec<usize>,
    /// Per local op: its call node.
    call_node: Vec<usize>,
    /// Per value id: unknown-outcome writes of that value, by call time. They
    /// are kept out of the event list and placed only just before a read of
    /// their value (see the module docs).
    unknown_writers: Vec<Vec<usize>>,
    /// Initial linked list: `next`/`prev` over nodes plus HEAD and TAIL.
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    tail: usize,
}

/// How the search ended. Op indices are local.
enum Outcome {
    Linearizable,
    Stuck {
        culprit: usize,
        values: Vec<u32>,
    },
    Abandoned {
        visited: usize,
        limit: usize,
        culprit: Option<usize>,
        values: Vec<u32>,
    },
}

/// One linearized op on the search stack, with what is needed to undo it.
struct Frame {
    call: usize,
    prev_value: u32,
    /// Unknown-outcome write placed together with this read, if any.
    helper: Option<usize>,
    /// The op was a read of the current value, placed without trying the
    /// alternatives: if it leads nowhere, neither does the state before it.
    forced: bool,
}

/// The search's mutable position: the event list as far as it has been
/// consumed, the linearized set, the register value, and how to undo each step.
struct Walk {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Linearized-op bitset plus one final word holding the register value:
    /// the cache key of the current state.
    key: Vec<u64>,
    /// Zobrist hash of the bitset part of `key`.
    bits_hash: u64,
    value: u32,
    /// Known-outcome ops not yet linearized.
    left: usize,
    stack: Vec<Frame>,
}

impl Walk {
    fn flip(&mut self, zobrist: &Zobrist, op: usize, helper: Option<usize>) {
        flip_bit(&mut self.key, &mut self.bits_hash, zobrist, op);
        if let Some(h) = helper {
            flip_bit(&mut self.key, &mut self.bits_hash, zobrist, h);
        }
    }

    /// Linearizes the op whose call is `call` (plus `helper`), if the state
    /// this leads to is new: records it in `cache` and moves into it.
    fn advance(
        &mut self,
        problem: &Problem,
        zobrist: &Zobrist,
        cache: &mut VisitedSet,
        call: usize,
        (new_value, helper): (u32, Option<usize>),
        forced: bool,
    ) -> bool {
        let op = problem.node_op[call];
        self.flip(zobrist, op, helper);
        let value_word = self.key.len() - 1;
        self.key[value_word] = u64::from(new_value);
        if !cache.insert(self.bits_hash ^ zobrist.value(new_value), &self.key) {
            // Already explored from this exact state (and it failed, since
            // the search would have stopped on success): skip it.
            self.flip(zobrist, op, helper);
            return false;
        }
        self.stack.push(Frame {
            call,
            prev_value: self.value,
            helper,
            forced,
        });
        self.value = new_value;
        unlink(&mut self.next, &mut self.prev, call);
        unlink(&mut self.next, &mut self.prev, problem.node_return[call]);
        self.left -= 1;
        true
    }

    /// The current state has no way forward: undo steps until one leaves an
    /// untried alternative, and return the event to resume scanning at, or
    /// `None` when every alternative is exhausted.
    fn retreat(&mut self, problem: &Problem, zobrist: &Zobrist) -> Option<usize> {
        loop {
            let frame = self.stack.pop()?;
            self.flip(zobrist, problem.node_op[frame.call], frame.helper);
            self.value = frame.prev_value;
            // Relink in the reverse order of unlinking (return, then call).
            relink(
                &mut self.next,
                &mut self.prev,
                problem.node_return[frame.call],
            );
            relink(&mut self.next, &mut self.prev, frame.call);
            self.left += 1;
            if !frame.forced {
                return Some(self.next[frame.call]);
            }
        }
    }
}

/// The furthest return event any search path reached, and the register values
/// seen there (for the report).
struct Frontier {
    node: usize,
    values: Vec<u32>,
}

impl Frontier {
    fn record(&mut self, node: usize, value: u32) {
        if self.node == NIL || node > self.node {
            self.node = node;
            self.values.clear();
            self.values.push(value);
        } else if node == self.node
            && self.values.len() < MAX_FRONTIER_VALUES
            && !self.values.contains(&value)
        {
            self.values.push(value);
        }
    }
}

impl Problem {
    fn new(ops: &[RegOp], kept: Vec<usize>, steps: Vec<Step>, initial: u32) -> Problem {
        let n = kept.len();
        // (time, 0 = call / 1 = return, op): calls sort before returns at the
        // same instant, so ops touching at one timestamp are concurrent.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
        for (local, &i) in kept.iter().enumerate() {
            events.push((ops[i].invoke, 0, local));
            if let Some(c) = ops[i].complete {
                events.push((c, 1, local));
            }
        }
        events.sort_unstable();

        let e = events.len();
        let (head, tail) = (e, e + 1);
        let mut node_op = vec![0; e];
        let mut node_is_call = vec![false; e];
        let mut node_return = vec![NIL; e];
        let mut call_node = vec![NIL; n];
        let mut return_node = vec![NIL; n];
        for (node, &(_, kind, op)) in events.iter().enumerate() {
            node_op[node] = op;
            node_is_call[node] = kind == 0;
            if kind == 0 {
                call_node[op] = node;
            } else {
                return_node[op] = node;
            }
        }
        for op in 0..n {
            if return_node[op] != NIL {
                node_return[call_node[op]] = return_node[op];
            }
        }

        let mut known = 0;
        let mut unknown_writers: Vec<Vec<usize>> = Vec::new();
        for op in 0..n {
            if return_node[op] != NIL {
                known += 1;
            } else if let Step::Write(v) = steps[op] {
                let v = v as usize;
                if unknown_writers.len() <= v {
                    unknown_writers.resize_with(v + 1, Vec::new);
                }
                unknown_writers[v].push(op);
            }
        }
        for writers in &mut unknown_writers {
            writers.sort_unstable_by_key(|&op| call_node[op]);
        }

        // Link the events of known-outcome ops only.
        let mut next = vec![NIL; e + 2];
        let mut prev = vec![NIL; e + 2];
        let mut last = head;
        for node in 0..e {
            if return_node[node_op[node]] != NIL {
                next[last] = node;
                prev[node] = last;
                last = node;
            }
        }
        next[last] = tail;
        prev[tail] = last;

        Problem {
            kept,
            steps,
            initial,
            known,
            node_op,
            node_is_call,
            node_return,
            call_node,
            unknown_writers,
            next,
            prev,
            head,
            tail,
        }
    }

    /// Just-in-time linearization search; see the module docs.
    fn search(&self, max_states: usize) -> Outcome {
        let n = self.kept.len();
        let words = n.div_ceil(64);
        // Bound the cache by memory as well as by count: one entry is the
        // bitset, the value word, and the table overhead.
        let entry_bytes = (words + 1) * 8 + 32;
        let cap = max_states.min(MAX_CACHE_BYTES / entry_bytes).max(1);

        // The cache key is the linearized-op bitset with the register value
        // appended as one extra word. Its hash is kept up to date as bits flip
        // (Zobrist hashing), so a lookup never rehashes the whole bitset.
        let zobrist = Zobrist::new(n);
        let mut cache = VisitedSet::new(words + 1);
        let mut walk = Walk {
            next: self.next.clone(),
            prev: self.prev.clone(),
            key: vec![0u64; words + 1],
            bits_hash: 0,
            value: self.initial,
            left: self.known,
            stack: Vec::new(),
        };
        let mut frontier = Frontier {
            node: NIL,
            values: Vec::new(),
        };
        let stuck = |frontier: Frontier| match frontier.node {
            // Unreachable: failing needs a return that could not be passed.
            NIL => Outcome::Linearizable,
            f => Outcome::Stuck {
                culprit: self.node_op[f],
                values: frontier.values,
            },
        };

        // `entered`: the walk just moved into a new state, so check for
        // success and look for a read to place greedily before scanning.
        let mut entered = true;
        let mut node = self.head;
        loop {
            if entered && walk.left == 0 {
                return Outcome::Linearizable;
            }
            if cache.len() >= cap {
                return Outcome::Abandoned {
                    visited: cache.len(),
                    limit: cap,
                    culprit: (frontier.node != NIL).then(|| self.node_op[frontier.node]),
                    values: frontier.values,
                };
            }
            if entered {
                entered = false;
                // A read that can see the current value now might as well be
                // placed now: reads do not change the register, and placing
                // one earlier only widens the window for the rest. So the
                // state with it placed dominates the state without it, and
                // its alternatives need no exploring.
                if let Some(read) = self.matching_read(walk.value, &walk.next) {
                    let step = (walk.value, None);
                    if walk.advance(self, &zobrist, &mut cache, read, step, true) {
                        entered = true;
                    } else {
                        match walk.retreat(self, &zobrist) {
                            Some(resume) => node = resume,
                            None => return stuck(frontier),
                        }
                    }
                    continue;
                }
                node = walk.next[self.head];
            }

            if node == self.tail || !self.node_is_call[node] {
                // The first remaining event is a return: that op's deadline has
                // passed unplaced, so undo the last choice and try the next one.
                // (The tail is unreachable while known ops remain, since each
                // remaining call is followed by its own return; treated alike.)
                if node != self.tail {
                    frontier.record(node, walk.value);
                }
                match walk.retreat(self, &zobrist) {
                    Some(resume) => node = resume,
                    None => return stuck(frontier),
                }
                continue;
            }

            let op = self.node_op[node];
            if let Some(step) = self.try_step(op, walk.value, &walk.key, &walk.next) {
                if walk.advance(self, &zobrist, &mut cache, node, step, false) {
                    entered = true;
                    continue;
                }
            }
            node = walk.next[node];
        }
    }

    /// The call event of a read in the current window (before the first
    /// remaining return) that returned `value`, if any.
    fn matching_read(&self, value: u32, next: &[usize]) -> Option<usize> {
        let mut node = next[self.head];
        while node != self.tail && self.node_is_call[node] {
            if matches!(self.steps[self.node_op[node]], Step::Read(v) if v == value) {
                return Some(node);
            }
            node = next[node];
        }
        None
    }

    /// Whether `op` (whose call is in the current window) can be placed now
    /// with the register holding `value`; returns the new value and the
    /// unknown-outcome write placed just before it, if one was needed.
    fn try_step(
        &self,
        op: usize,
        value: u32,
        key: &[u64],
        next: &[usize],
    ) -> Option<(u32, Option<usize>)> {
        match self.steps[op] {
            Step::Write(v) => Some((v, None)),
            Step::Read(v) if v == value => Some((v, None)),
            Step::Read(v) => {
                let writers = self.unknown_writers.get(v as usize)?;
                if writers.is_empty() {
                    return None;
                }
                // An unknown write is available if it was invoked before the
                // current window closes, i.e. before the first remaining return.
                let mut n = self.call_node[op];
                while n != self.tail && self.node_is_call[n] {
                    n = next[n];
                }
                let deadline = n;
                writers
                    .iter()
                    .take_while(|&&w| self.call_node[w] < deadline)
                    .find(|&&w| !bit(key, w))
                    .map(|&w| (v, Some(w)))
            }
        }
    }
}

fn unlink(next: &mut [usize], prev: &mut [usize], node: usize) {
    let (p, n) = (prev[node], next[node]);
    next[p] = n;
    prev[n] = p;
}

fn relink(next: &mut [usize], prev: &mut [usize], node: usize) {
    let (p, n) = (prev[node], next[node]);
    next[p] = node;
    prev[n] = node;
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] >> (i % 64) & 1 == 1
}

/// Toggles op `i` in the bitset and in its running hash together.
fn flip_bit(bits: &mut [u64], hash: &mut u64, zobrist: &Zobrist, i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
    *hash ^= zobrist.ops[i];
}

/// Random words for Zobrist hashing: a set's hash is the XOR of its members'
/// words, so adding or removing a member updates it in O(1).
struct Zobrist {
    ops: Vec<u64>,
}

impl Zobrist {
    fn new(n: usize) -> Zobrist {
        // Fixed seed: runs are reproducible; adversarial inputs are not a concern.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        Zobrist {
            ops: (0..n).map(|_| splitmix64(&mut seed)).collect(),
        }
    }

    /// The hash word of a register value (derived, not stored: values are few
    /// but their count is not known here).
    fn value(&self, v: u32) -> u64 {
        let mut seed = u64::from(v) ^ 0x9e6c_63d0_676a_9a99;
        splitmix64(&mut seed)
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The set of visited search states. Keys (bitset plus value word) are
/// stored back to back in one arena instead of one allocation each, and
/// indexed by their Zobrist hash; keys whose hashes collide are chained and
/// compared in full, so a collision never prunes a state wrongly.
struct VisitedSet {
    key_words: usize,
    arena: Vec<u64>,
    /// Per stored key: the previous key stored under the same hash, or NO_KEY.
    chain: Vec<u32>,
    heads: HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>,
}

const NO_KEY: u32 = u32::MAX;

impl VisitedSet {
    fn new(key_words: usize) -> VisitedSet {
        VisitedSet {
            key_words,
            arena: Vec::new(),
            chain: Vec::new(),
            heads: HashMap::default(),
        }
    }

    fn len(&self) -> usize {
        self.chain.len()
    }

    /// Adds `key` (whose hash is `hash`); false if it was already present.
    fn insert(&mut self, hash: u64, key: &[u64]) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(NO_KEY);
        let mut at = head;
        while at != NO_KEY {
            let start = at as usize * self.key_words;
            if self.arena[start..start + self.key_words] == *key {
                return false;
            }
            at = self.chain[at as usize];
        }
        // The caller caps the set far below u32::MAX entries.
        let index = u32::try_from(self.chain.len()).unwrap_or(NO_KEY - 1);
        self.arena.extend_from_slice(key);
        self.chain.push(head);
        self.heads.insert(hash, index);
        true
    }
}

/// The keys of `VisitedSet::heads` are already uniformly random hashes, so
/// hashing them again would only cost time.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Picks the ops that explain a violation at `culprit` (an index into `ops`):
/// the culprit; the last writes and reads completed before it was invoked
/// (what it should have seen); the writes of the value it returned (what it
/// did see); and the ops concurrent with it (what it could have seen).
/// Most telling first, capped, then sorted by invoke.
fn excerpt(ops: &[RegOp], kept: &[usize], culprit: usize) -> Vec<RegOp> {
    let c = &ops[culprit];
    let c_end = c.complete.unwrap_or(u64::MAX);
    let distance = |i: usize| ops[i].invoke.abs_diff(c.invoke);
    let is_write = |i: usize| matches!(ops[i].kind, RegKind::Write(_));

    let mut chosen = vec![culprit];
    let add = |chosen: &mut Vec<usize>, candidates: Vec<usize>, limit: usize| {
        for i in candidates.into_iter().take(limit) {
            if chosen.len() < EXCERPT_CAP && !chosen.contains(&i) {
                chosen.push(i);
            }
        }
    };
    let others = || kept.iter().copied().filter(|&i| i != culprit);
    let completed_before = |i: usize| ops[i].complete.is_some_and(|t| t < c.invoke);

    // The last three writes that completed before the culprit began: one of
    // them (or something concurrent) is what it should have observed.
    let mut last_writes: Vec<usize> = others()
        .filter(|&i| is_write(i) && completed_before(i))
        .collect();
    last_writes.sort_by_key(|&i| std::cmp::Reverse((ops[i].complete, i)));
    add(&mut chosen, last_writes, 3);

    // Writes of the value the culprit read, nearest first: where it came from.
    if let RegKind::Read(v) = &c.kind {
        let mut sources: Vec<usize> = others()
            .filter(|&i| matches!(&ops[i].kind, RegKind::Write(w) if w == v))
            .collect();
        sources.sort_by_key(|&i| (distance(i), i));
        add(&mut chosen, sources, 3);
    }

    // The last two reads completed before it: a newer value seen earlier is
    // what makes a stale read stale.
    let mut last_reads: Vec<usize> = others()
        .filter(|&i| !is_write(i) && completed_before(i))
        .collect();
    last_reads.sort_by_key(|&i| std::cmp::Reverse((ops[i].complete, i)));
    add(&mut chosen, last_reads, 2);

    // Ops whose windows overlap the culprit's (touching counts, like in the
    // search). Known-outcome ones first: unknown writes overlap everything
    // after their invoke, so they are the least specific.
    let overlapping =
        |i: usize| ops[i].invoke <= c_end && c.invoke <= ops[i].complete.unwrap_or(u64::MAX);
    let mut concurrent: Vec<usize> = others().filter(|&i| overlapping(i)).collect();
    concurrent.sort_by_key(|&i| (ops[i].complete.is_none(), distance(i), i));
    add(&mut chosen, concurrent, EXCERPT_CAP);

    chosen.sort_by_key(|&i| (ops[i].invoke, i));
    chosen.into_iter().map(|i| ops[i].clone()).collect()
}

fn read_value(op: &RegOp) -> &Option<String> {
    match &op.kind {
        RegKind::Read(v) | RegKind::Write(v) => v,
    }
}

fn window(op: &RegOp) -> String {
    match op.complete {
        Some(c) => format!("invoked {} and completed {}", op.invoke, c),
        None => format!("invoked {} with unknown outcome", op.invoke),
    }
}

fn describe_value(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "<absent>".to_string(),
    }
}

fn describe_values(ids: &[u32], values: &Interner) -> String {
    if ids.is_empty() {
        return "nothing known".to_string();
    }
    let listed: Vec<String> = ids
        .iter()
        .filter_map(|&id| values.value(id))
        .map(describe_value)
        .collect();
    let more = if ids.len() >= MAX_FRONTIER_VALUES {
        ", ..."
    } else {
        ""
    };
    format!("{}{more}", listed.join(" or "))
}

fn describe_kind(kind: &RegKind) -> String {
    match kind {
        RegKind::Write(None) => "write <absent> (delete)".to_string(),
        RegKind::Write(v) => format!("write {}", describe_value(v)),
        RegKind::Read(v) => format!("read {}", describe_value(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    fn op(id: usize, process: usize, invoke: u64, complete: Option<u64>, kind: RegKind) -> RegOp {
        RegOp {
            id,
            process,
            invoke,
            complete,
            kind,
        }
    }

    fn w(id: usize, p: usize, inv: u64, comp: u64, v: Option<String>) -> RegOp {
        op(id, p, inv, Some(comp), RegKind::Write(v))
    }

    /// Write with unknown outcome.
    fn wu(id: usize, p: usize, inv: u64, v: Option<String>) -> RegOp {
        op(id, p, inv, None, RegKind::Write(v))
    }

    fn r(id: usize, p: usize, inv: u64, comp: u64, v: Option<String>) -> RegOp {
        op(id, p, inv, Some(comp), RegKind::Read(v))
    }

    #[test]
    fn empty_history_is_ok() {
        assert!(check(None, &[]).is_ok());
        assert!(check(s("a"), &[]).is_ok());
    }

    #[test]
    fn sequential_write_then_read_ok() {
        let h = [
            w(0, 0, 0, 10, s("a")),
            r(1, 1, 20, 30, s("a")),
            w(2, 0, 40, 50, s("b")),
            r(3, 1, 60, 70, s("b")),
        ];
        assert!(check(None, &h).is_ok());
    }

    #[test]
    fn initial_value_is_readable() {
        assert!(check(s("a"), &[r(0, 0, 0, 1, s("a"))]).is_ok());
        assert!(check(None, &[r(0, 0, 0, 1, None)]).is_ok());
        // Initially present, but the read claims absent and nobody deleted.
        assert!(check(s("a"), &[r(0, 0, 0, 1, None)]).is_err());
    }

    #[test]
    fn stale_read_after_completed_write_fails() {
        let h = [
            w(0, 0, 0, 10, s("a")),
            w(1, 0, 20, 30, s("b")),
            r(2, 1, 40, 50, s("a")),
        ];
        let v = check(None, &h).expect_err("stale read must be rejected");
        assert_eq!(v.culprit, h[2]);
        assert!(
            v.excerpt.contains(&h[1]),
            "excerpt shows the overwriting write"
        );
        assert!(
            v.excerpt.contains(&h[0]),
            "excerpt shows the source of the stale value"
        );
        assert!(
            v.reason.contains("\"b\""),
            "reason names what it could hold: {}",
            v.reason
        );
        let shown = v.to_string();
        assert!(shown.contains("-> op 2"), "{shown}");
        assert!(shown.contains("[40, 50]"), "{shown}");
    }

    #[test]
    fn concurrent_write_and_read_may_see_either() {
        for seen in [None, s("a")] {
            let h = [w(0, 0, 0, 100, s("a")), r(1, 1, 10, 20, seen)];
            assert!(check(None, &h).is_ok());
        }
    }

    #[test]
    fn equal_timestamps_are_concurrent() {
        // The write's response and the read's invocation share a timestamp:
        // the clock cannot order them, so the old value is still allowed.
        let h = [w(0, 0, 0, 10, s("a")), r(1, 1, 10, 20, None)];
        assert!(check(None, &h).is_ok());
        // One tick later the write definitely came first.
        let h = [w(0, 0, 0, 10, s("a")), r(1, 1, 11, 20, None)];
        assert!(check(None, &h).is_err());
    }

    #[test]
    fn read_of_never_written_value_fails() {
        let h = [w(0, 0, 0, 10, s("a")), r(1, 1, 20, 30, s("zzz"))];
        let v = check(None, &h).expect_err("phantom value");
        assert_eq!(v.culprit, h[1]);
        assert!(
            v.reason.contains("no write in the history ever wrote"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn unknown_write_later_observed_ok() {
        let h = [
            w(0, 0, 0, 10, s("a")),
            wu(1, 1, 20, s("b")),
            r(2, 2, 100, 110, s("b")),
            r(3, 2, 120, 130, s("b")),
        ];
        assert!(check(None, &h).is_ok());
    }

    #[test]
    fn unknown_write_never_observed_ok() {
        let h = [
            w(0, 0, 0, 10, s("a")),
            wu(1, 1, 20, s("b")),
            r(2, 2, 100, 110, s("a")),
            r(3, 2, 120, 130, s("a")),
        ];
        assert!(check(None, &h).is_ok());
    }

    #[test]
    fn unknown_write_cannot_act_before_its_invoke() {
        let h = [r(0, 0, 0, 10, s("b")), wu(1, 1, 20, s("b"))];
        assert!(check(None, &h).is_err());
    }

    #[test]
    fn unknown_write_observed_then_older_value_fails() {
        // Once "b" was seen, it took effect; a later read cannot go back to
        // "a" without another write of "a".
        let h = [
            w(0, 0, 0, 10, s("a")),
            wu(1, 1, 20, s("b")),
            r(2, 2, 100, 110, s("b")),
            r(3, 2, 120, 130, s("a")),
        ];
        let v = check(None, &h).expect_err("went back in time");
        assert_eq!(v.culprit, h[3]);
    }

    #[test]
    fn unknown_write_is_used_at_most_once() {
        // "b" seen, then "a" (a concurrent write), then "b" again: the single
        // unknown write of "b" cannot take effect twice.
        let h = [
            wu(0, 0, 0, s("b")),
            r(1, 1, 10, 20, s("b")),
            w(2, 2, 30, 40, s("a")),
            r(3, 1, 50, 60, s("b")),
        ];
        let v = check(None, &h).expect_err("one write, two effects");
        assert_eq!(v.culprit, h[3]);
        // A second unknown write of "b" makes it fine.
        let mut h2 = h.to_vec();
        h2.push(wu(4, 3, 45, s("b")));
        assert!(check(None, &h2).is_ok());
    }

    #[test]
    fn reordering_fails() {
        let h = [
            w(0, 0, 0, 5, s("1")),
            w(1, 1, 6, 50, s("2")),
            r(2, 2, 10, 20, s("2")),
            r(3, 3, 30, 40, s("1")),
        ];
        let v = check(None, &h).expect_err("read went backwards");
        assert_eq!(v.culprit, h[3]);
        assert!(
            v.excerpt.contains(&h[2]),
            "excerpt shows the earlier newer read"
        );
        // Overlapping reads may see the values in either order.
        let h = [
            w(0, 0, 0, 5, s("1")),
            w(1, 1, 6, 50, s("2")),
            r(2, 2, 10, 35, s("2")),
            r(3, 3, 30, 40, s("1")),
        ];
        assert!(check(None, &h).is_ok());
    }

    #[test]
    fn delete_then_read_none_ok() {
        let h = [
            w(0, 0, 0, 10, s("a")),
            r(1, 1, 11, 12, s("a")),
            w(2, 0, 20, 30, None),
            r(3, 1, 40, 50, None),
        ];
        assert!(check(None, &h).is_ok());
        let mut bad = h.to_vec();
        bad[3] = r(3, 1, 40, 50, s("a"));
        assert_eq!(check(None, &bad).expect_err("deleted").culprit, bad[3]);
    }

    #[test]
    fn unknown_reads_are_ignored() {
        let h = [
            w(0, 0, 0, 10, s("a")),
            op(1, 1, 20, None, RegKind::Read(s("nonsense"))),
        ];
        assert!(check(None, &h).is_ok());
    }

    #[test]
    fn malformed_op_is_reported() {
        let h = [r(0, 0, 10, 5, None)];
        let v = check(None, &h).expect_err("complete before invoke");
        assert!(v.reason.contains("Malformed"), "{}", v.reason);
    }

    #[test]
    fn abandoned_search_is_an_error() {
        let mut rng = Rng(7);
        let (initial, h) = linearizable_history(&mut rng, 6, 200, 0.05);
        let v = check_with_limit(initial, &h, 10).expect_err("limit of 10 states");
        assert!(v.reason.contains("abandoned"), "{}", v.reason);
        assert!(v.reason.contains("(limit 10)"), "{}", v.reason);
        assert!(
            v.reason.contains("NOT shown to be linearizable"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn display_lists_excerpt() {
        let h = [
            w(0, 7, 0, 10, s("a")),
            r(1, 8, 20, 30, None),
            wu(2, 9, 25, s("b")),
            w(3, 9, 40, 50, None),
        ];
        let v = check(None, &h).expect_err("stale");
        let shown = v.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], v.reason);
        assert_eq!(lines.len(), 1 + v.excerpt.len());
        assert!(shown.contains("process 7"), "{shown}");
        assert!(shown.contains("-> op 1"), "{shown}");
        assert!(shown.contains("[25, ?]"), "{shown}");
        assert!(shown.contains("write <absent> (delete)"), "{shown}");
        assert!(shown.contains("read <absent>"), "{shown}");
    }

    /// A tiny deterministic generator so the tests need no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            splitmix64(&mut self.0)
        }
        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next() % (hi - lo + 1)
        }
        fn chance(&mut self, p: f64) -> bool {
            ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
        }
    }

    /// Simulates `clients` clients on a real register: each op gets a window,
    /// a linearization point inside it, and is applied in point order. A
    /// fraction of writes lose their response (some of those never apply).
    fn linearizable_history(
        rng: &mut Rng,
        clients: usize,
        count: usize,
        unknown: f64,
    ) -> (Option<String>, Vec<RegOp>) {
        let initial = if rng.chance(0.5) { s("init") } else { None };
        let mut clock = vec![0u64; clients];
        // (op, linearization point, takes effect)
        let mut planned: Vec<(RegOp, u64, bool)> = Vec::with_capacity(count);
        for id in 0..count {
            let p = rng.range(0, clients as u64 - 1) as usize;
            let invoke = clock[p] + rng.range(0, 4);
            let complete = invoke + rng.range(0, 12);
            let point = rng.range(invoke, complete);
            clock[p] = complete + rng.range(0, 3);
            let mut took_effect = true;
            let (kind, complete) = if rng.chance(0.4) {
                let v = if rng.chance(0.15) {
                    None
                } else {
                    Some(format!("v{id}"))
                };
                if rng.chance(unknown) {
                    took_effect = rng.chance(0.5);
                    (RegKind::Write(v), None)
                } else {
                    (RegKind::Write(v), Some(complete))
                }
            } else {
                (RegKind::Read(None), Some(complete))
            };
            planned.push((op(id, p, invoke, complete, kind), point, took_effect));
        }
        let mut order: Vec<usize> = (0..count).collect();
        order.sort_by_key(|&i| (planned[i].1, i));
        let mut value = initial.clone();
        for i in order {
            let (op, _, took_effect) = &mut planned[i];
            match &mut op.kind {
                RegKind::Write(v) if *took_effect => value = v.clone(),
                RegKind::Write(_) => {}
                RegKind::Read(seen) => *seen = value.clone(),
            }
        }
        (initial, planned.into_iter().map(|(op, _, _)| op).collect())
    }

    /// Exhaustive reference: tries every order consistent with real time,
    /// placing known-outcome ops always and unknown writes optionally.
    fn brute_force(initial: &Option<String>, ops: &[RegOp]) -> bool {
        let ops: Vec<&RegOp> = ops
            .iter()
            .filter(|o| !(matches!(o.kind, RegKind::Read(_)) && o.complete.is_none()))
            .collect();
        assert!(ops.len() <= 20);
        let before: Vec<u32> = ops
            .iter()
            .map(|b| {
                ops.iter()
                    .enumerate()
                    .filter(|(_, a)| a.complete.is_some_and(|c| c < b.invoke))
                    .fold(0, |m, (i, _)| m | 1 << i)
            })
            .collect();
        let required: u32 = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.complete.is_some())
            .fold(0, |m, (i, _)| m | 1 << i);
        fn go(
            ops: &[&RegOp],
            before: &[u32],
            required: u32,
            placed: u32,
            value: &Option<String>,
        ) -> bool {
            if placed & required == required {
                return true;
            }
            (0..ops.len()).any(|i| {
                placed & 1 << i == 0
                    && before[i] & !placed == 0
                    && match &ops[i].kind {
                        RegKind::Write(v) => go(ops, before, required, placed | 1 << i, v),
                        RegKind::Read(v) => {
                            v == value && go(ops, before, required, placed | 1 << i, value)
                        }
                    }
            })
        }
        go(&ops, &before, required, 0, initial)
    }

    /// The history as it stood at the culprit's response (just before it, or
    /// including it): ops still pending then lose their outcome.
    fn cut_at(ops: &[RegOp], culprit: usize, including: bool) -> Vec<RegOp> {
        let event = |t: u64, kind: u8, i: usize| (t, kind, i);
        let c = &ops[culprit];
        let at = event(c.complete.unwrap_or(u64::MAX), 1, culprit);
        let within = |e| if including { e <= at } else { e < at };
        ops.iter()
            .enumerate()
            .filter(|(i, o)| within(event(o.invoke, 0, *i)))
            .filter_map(|(i, o)| {
                let done = o.complete.is_some_and(|t| within(event(t, 1, i)));
                match (&o.kind, done) {
                    (_, true) => Some(o.clone()),
                    (RegKind::Read(_), false) => None,
                    (RegKind::Write(_), false) => Some(RegOp {
                        complete: None,
                        ..o.clone()
                    }),
                }
            })
            .collect()
    }

    #[test]
    fn random_linearizable_histories_pass() {
        for seed in 0..200 {
            let mut rng = Rng(seed);
            let (initial, h) = linearizable_history(&mut rng, 6, 300, 0.05);
            if let Err(v) = check(initial, &h) {
                panic!("seed {seed}: linearizable history rejected:\n{v}");
            }
        }
    }

    #[test]
    fn random_mutations_agree_with_brute_force() {
        let mut rejected = 0;
        for seed in 0..500 {
            let mut rng = Rng(1_000 + seed);
            let (initial, mut h) = linearizable_history(&mut rng, 3, 8, 0.15);
            // Flip one read to a value written earlier (or the initial one),
            // which usually makes it stale.
            let reads: Vec<usize> = (0..h.len())
                .filter(|&i| matches!(h[i].kind, RegKind::Read(_)))
                .collect();
            if !reads.is_empty() {
                let target = reads[rng.range(0, reads.len() as u64 - 1) as usize];
                let mut older: Vec<Option<String>> = vec![initial.clone()];
                for o in &h {
                    if let RegKind::Write(v) = &o.kind {
                        if o.invoke <= h[target].invoke {
                            older.push(v.clone());
                        }
                    }
                }
                let pick = older[rng.range(0, older.len() as u64 - 1) as usize].clone();
                h[target].kind = RegKind::Read(pick);
            }
            let expected = brute_force(&initial, &h);
            let got = check(initial.clone(), &h);
            assert_eq!(
                got.is_ok(),
                expected,
                "seed {seed}: history {h:#?}\ngot {got:?}"
            );
            if let Err(v) = got {
                rejected += 1;
                // The culprit is exactly where the history stops being
                // explainable: fine up to its response, broken after it.
                let idx = h
                    .iter()
                    .position(|o| *o == v.culprit)
                    .expect("culprit is from the history");
                assert!(
                    brute_force(&initial, &cut_at(&h, idx, false)),
                    "seed {seed}: {v}"
                );
                assert!(
                    !brute_force(&initial, &cut_at(&h, idx, true)),
                    "seed {seed}: {v}"
                );
                assert!(v.excerpt.contains(&v.culprit));
                assert!(v.excerpt.len() <= EXCERPT_CAP);
            }
        }
        // The mutations must actually exercise the failure path.
        assert!(
            rejected > 100,
            "only {rejected} of 500 mutated histories were rejected"
        );
    }

    #[test]
    fn random_small_histories_agree_with_brute_force() {
        // Arbitrary (mostly non-linearizable) histories over a few shared
        // values, to cover same-value writes and unknown-write reuse.
        for seed in 0..500 {
            let mut rng = Rng(50_000 + seed);
            let values = [None, s("a"), s("b")];
            let h: Vec<RegOp> = (0..8)
                .map(|id| {
                    let invoke = rng.range(0, 20);
                    let complete = invoke + rng.range(0, 8);
                    let v = values[rng.range(0, 2) as usize].clone();
                    if rng.chance(0.45) {
                        let complete = if rng.chance(0.2) {
                            None
                        } else {
                            Some(complete)
                        };
                        op(id, id % 3, invoke, complete, RegKind::Write(v))
                    } else {
                        op(id, id % 3, invoke, Some(complete), RegKind::Read(v))
                    }
                })
                .collect();
            let expected = brute_force(&None, &h);
            let got = check(None, &h);
            assert_eq!(
                got.is_ok(),
                expected,
                "seed {seed}: history {h:#?}\ngot {got:?}"
            );
            if let Err(v) = got {
                if !v.reason.contains("ever wrote") {
                    let idx = h
                        .iter()
                        .position(|o| *o == v.culprit)
                        .expect("culprit is from the history");
                    assert!(
                        brute_force(&None, &cut_at(&h, idx, false)),
                        "seed {seed}: {v}"
                    );
                    assert!(
                        !brute_force(&None, &cut_at(&h, idx, true)),
                        "seed {seed}: {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn timing_2000_ops() {
        let mut rng = Rng(42);
        let (initial, h) = linearizable_history(&mut rng, 8, 2_000, 0.05);
        let start = Instant::now();
        let result = check(initial.clone(), &h);
        let elapsed = start.elapsed();
        assert!(result.is_ok(), "{:?}", result.err());
        println!("register check: 2000 ops, 8 clients, linearizable: {elapsed:?}");

        // The failing case is slower: the search must exhaust everything
        // before the culprit. Make the last read return a value written (and
        // long overwritten) early in the history; values are unique per write.
        let mut bad = h.clone();
        let old_value = bad[..100]
            .iter()
            .find_map(|o| match &o.kind {
                RegKind::Write(Some(v)) if o.complete.is_some() => Some(v.clone()),
                _ => None,
            })
            .expect("an early completed write");
        let last_read = (0..bad.len())
            .rev()
            .find(|&i| matches!(bad[i].kind, RegKind::Read(_)))
            .expect("some read");
        bad[last_read].kind = RegKind::Read(Some(old_value));
        let start = Instant::now();
        let result = check(initial, &bad);
        let elapsed = start.elapsed();
        let violation = result.expect_err("stale read near the end");
        assert_eq!(violation.culprit, bad[last_read]);
        println!("register check: 2000 ops, 8 clients, one stale read near the end: {elapsed:?}");
    }
}
