//! Many writes, one entry. openraft 0.9 appends and fsyncs each client write on its own,
//! one after another, and keeps one AppendEntries in flight per follower, so under many
//! concurrent writers the leader's disk and the wait for each follower's answer bound the
//! rate (about 67 manifest PUTs a second with 64 pushers over three regions). Here the
//! leader's proposals queue, and whatever queued while earlier entries were committing
//! goes to Raft as one `Command::Batch`: one append, one fsync and one slot in the next
//! AppendEntries for all of them. A lone writer sees no difference: with a slot free, its
//! command goes at once, alone, as a plain entry.
//!
//! Batches are only formed while every member has reported a state machine that applies
//! them (`BATCHES_FROM_VERSION`, from the probes `replicas` makes): an older member would
//! stop at the first one. `meridian admin region add` refuses a node older than the
//! cluster for the same reason.

use super::command::{Command, CommandResult};
use super::types::{NodeId, Raft};
use super::MetaError;
use openraft::error::{ClientWriteError, RaftError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// The first `meta::STATE_VERSION` whose state machine applies `Command::Batch`.
pub const BATCHES_FROM_VERSION: u32 = 3;
/// Batched entries in flight at once (appending, replicating or applying). Enough that at
/// moderate load writes rarely wait for a slot (a wait costs up to a commit: 4 slots made
/// 64 pushers over 80–180 ms links slower than no batching); few enough that, under heavy
/// load, each entry carries many commands and the farthest follower keeps up applying
/// (`benches/geo_writes.sh`).
const SLOTS: usize = 16;
/// At most this many commands, and about this many bytes of them, per entry (an entry is
/// one gRPC message to a follower, with up to 63 others).
const MAX_COMMANDS: usize = 256;
const MAX_BYTES: usize = 1 << 20;

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<(CommandResult, u64), MetaError>>,
}

/// The queue in front of the leader's `client_write`.
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Proposal>,
    gate: Arc<Gate>,
    write_timeout: Duration,
}

impl Batcher {
    /// Starts the task that drains the queue into Raft.
    /// `enabled: false` (`raft.batch_writes`): every write goes alone.
    pub fn start(raft: Raft, node_id: NodeId, write_timeout: Duration, enabled: bool) -> Batcher {
        let (queue, proposals) = mpsc::unbounded_channel();
        let gate = Arc::new(Gate { raft: raft.clone(), node_id, enabled, versions: Mutex::new(BTreeMap::new()) });
        tokio::spawn(drain(proposals, raft, gate.clone(), write_timeout));
        Batcher { queue, gate, write_timeout }
    }

    /// Commits `cmd` (alone or with others) and returns its result and the entry's index.
    pub async fn write(&self, cmd: Command) -> Result<(CommandResult, u64), MetaError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Proposal { cmd, reply }).map_err(|_| MetaError::Fatal("the Raft write queue stopped".into()))?;
        match tokio::time::timeout(self.write_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MetaError::Fatal("the Raft write queue dropped a write".into())),
            Err(_) => Err(timed_out(self.write_timeout)),
        }
    }

    /// Notes the state version a member reported. The gauge `meridian_raft_batching`
    /// says whether writes are batched now (1) or not (0: some member is older, or has not
    /// answered a probe yet).
    pub fn note_version(&self, member: NodeId, state_version: u32) {
        self.gate.versions.lock().unwrap_or_else(|p| p.into_inner()).insert(member, state_version);
        metrics::gauge!("meridian_raft_batching").set(if self.gate.open() { 1.0 } else { 0.0 });
    }
}

/// Whether every member of the current membership applies batches.
struct Gate {
    raft: Raft,
    node_id: NodeId,
    enabled: bool,
    /// The state version each member reported when it last answered a probe. Kept while
    /// a member does not answer: one missed probe under load (or a region down) would
    /// otherwise stop batching everywhere. A member restarted on an older build reports
    /// its lower version at its first answer.
    versions: Mutex<BTreeMap<NodeId, u32>>,
}

impl Gate {
    fn open(&self) -> bool {
        if !self.enabled {
            return false;
        }
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let all = metrics
            .membership_config
            .membership()
            .nodes()
            .all(|(id, _)| *id == self.node_id || versions.get(id).is_some_and(|v| *v >= BATCHES_FROM_VERSION));
        all
    }
}

/// Takes a proposal, waits for a slot, then takes everything queued meanwhile (up to
/// the limits) and writes it in the background; the next group forms while this one
/// commits. With batching off, every proposal goes at once, alone, without a slot — as
/// each write did before batching (slots would only serialize them).
async fn drain(mut proposals: mpsc::UnboundedReceiver<Proposal>, raft: Raft, gate: Arc<Gate>, write_timeout: Duration) {
    let slots = Arc::new(Semaphore::new(SLOTS));
    // A proposal taken from the queue that did not fit the group before it.
    let mut held: Option<Proposal> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match proposals.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let raft = raft.clone();
        if !gate.open() {
            tokio::spawn(async move { submit(&raft, write_timeout, vec![first]).await });
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // Waiting for the slot, the caller may have given up (its 503 sent): a write
        // nobody waits for must not land later, after the client's next one.
        if first.reply.is_closed() {
            continue;
        }
        let mut bytes = encoded_len(&first.cmd);
        let mut group = vec![first];
        // The gate is looked at again: a member may have been added meanwhile.
        while gate.open() && group.len() < MAX_COMMANDS {
            let Ok(next) = proposals.try_recv() else { break };
            if next.reply.is_closed() {
                continue;
            }
            let size = encoded_len(&next.cmd);
            if bytes + size > MAX_BYTES {
                held = Some(next);
                break;
            }
            bytes += size;
            group.push(next);
        }
        tokio::spawn(async move {
            submit(&raft, write_timeout, group).await;
            drop(slot);
        });
    }
}

async fn submit(raft: &Raft, write_timeout: Duration, mut group: Vec<Proposal>) {
    metrics::histogram!("meridian_raft_commands_per_entry").record(group.len() as f64);
    if group.len() == 1 {
        if let Some(p) = group.pop() {
            let _ = p.reply.send(client_write(raft, write_timeout, p.cmd).await);
        }
        return;
    }
    let (cmds, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let count = cmds.len();
    match client_write(raft, write_timeout, Command::Batch(cmds)).await {
        Ok((CommandResult::Batch(results), index)) if results.len() == count => {
            for (result, reply) in results.into_iter().zip(replies) {
                let _ = reply.send(Ok((result, index)));
            }
        }
        Ok((other, _)) => {
            for reply in replies {
                let _ = reply.send(Err(MetaError::Fatal(format!("a batch of {count} applied as {other:?}"))));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.for_another_waiter()));
            }
        }
    }
}

/// One entry through the local Raft, which must be the leader.
async fn client_write(raft: &Raft, write_timeout: Duration, cmd: Command) -> Result<(CommandResult, u64), MetaError> {
    match tokio::time::timeout(write_timeout, raft.client_write(cmd)).await {
        Err(_) => Err(timed_out(write_timeout)),
        Ok(Ok(resp)) => Ok((resp.data, resp.log_id.index)),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(MetaError::NoQuorum(format!("leadership moved (now {:?}); retry", f.leader_id)))
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => Err(MetaError::Fatal(e.to_string())),
        Ok(Err(RaftError::Fatal(e))) => Err(MetaError::Fatal(e.to_string())),
    }
}

fn timed_out(write_timeout: Duration) -> MetaError {
    MetaError::NoQuorum(format!("the write did not commit within {} ms", write_timeout.as_millis()))
}

/// The bytes `cmd` takes in an entry (JSON), counted without building it.
fn encoded_len(cmd: &Command) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a command cannot fail (no maps with non-string keys); count it as big
    // if it ever did, so it goes alone.
    match serde_json::to_writer(&mut count, cmd) {
        Ok(()) => count.0,
        Err(_) => MAX_BYTES,
    }
}
