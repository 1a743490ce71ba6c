//! Leadership confirmations shared by the reads waiting for one. openraft 0.9's
//! `ensure_linearizable` sends a heartbeat round of its own per call, and each follower
//! takes one AppendEntries at a time: 64 linearizable reads at once over 80 ms links queued
//! 64 rounds behind each other and timed out (`cluster_batched_writes` found it). A round
//! that *starts after* a read arrived answers for that read as well as its own would: it
//! confirms the leadership at a moment after the read began, and its read index is at
//! least the commit index then. So reads that arrive while a round runs wait for the next
//! round, which serves them all; a lone read starts its round at once.

use super::types::Raft;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Answer = Result<u64, String>;

pub(super) struct ReadIndexRounds {
    waiting: mpsc::UnboundedSender<oneshot::Sender<Answer>>,
}

impl ReadIndexRounds {
    /// Starts the task that runs the rounds; each gives up after `timeout`.
    pub fn start(raft: Raft, timeout: Duration) -> ReadIndexRounds {
        let (waiting, readers) = mpsc::unbounded_channel();
        tokio::spawn(run_rounds(raft, readers, timeout));
        ReadIndexRounds { waiting }
    }

    /// Confirms the leadership with a quorum (in a round that starts after this call) and
    /// returns the read index; the error says why it could not.
    pub async fn read_index(&self) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.waiting.send(reply).map_err(|_| "the read-index task stopped".to_string())?;
        answer.await.map_err(|_| "the read-index task dropped a read".to_string())?
    }
}

async fn run_rounds(raft: Raft, mut readers: mpsc::UnboundedReceiver<oneshot::Sender<Answer>>, timeout: Duration) {
    while let Some(first) = readers.recv().await {
        // Everyone waiting now arrived before this round starts; later arrivals wait for
        // the next one.
        let mut round = vec![first];
        while let Ok(next) = readers.try_recv() {
            round.push(next);
        }
        metrics::histogram!("meridian_raft_reads_per_confirmation").record(round.len() as f64);
        let answer = match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
            Err(_) => Err("could not confirm leadership in time".to_string()),
            Ok(Ok(log_id)) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
            Ok(Err(e)) => Err(e.to_string()),
        };
        for reply in round {
            let _ = reply.send(answer.clone());
        }
    }
}
