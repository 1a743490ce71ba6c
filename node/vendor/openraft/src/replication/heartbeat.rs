//! Meridian patch: heartbeats on a lane of their own, beside the data stream.
//!
//! Upstream 0.9 sends a heartbeat (an AppendEntries without entries, carrying the commit
//! index) from the same loop that sends log entries, and waits for its answer. So after
//! every commit the loop is busy for one round trip telling the follower the new commit
//! index, and an entry proposed meanwhile waits for that round trip before it can go out:
//! back-to-back writes from one client cost two round trips, and a follower whose data
//! RPC is still in flight learns of a commit only after that RPC returns.
//!
//! Here a small task stands between RaftCore and the replication loop: it forwards every
//! event to the loop unchanged, and on a commit or a heartbeat tick it sends the heartbeat
//! itself, on network clients of its own: one at a time (a request arriving while one is
//! in flight is folded into the next), but for a commit index newer than the one in
//! flight carries, which goes at once on a second client (a tick's heartbeat in flight
//! would otherwise hold the news of a commit back for up to a round trip). Its answer is reported to RaftCore exactly as
//! the loop reported it: the leader's clock on success, a conflict, a higher vote, or an
//! error. Reordering against the data stream is safe: a follower only commits up to what
//! it has accepted from this leader, and `accepted` never moves back.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::future::Either;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::select;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::core::notify::Notify;
use crate::error::decompose::DecomposeResult;
use crate::error::RPCError;
use crate::network::RPCOption;
use crate::network::RaftNetwork;
use crate::raft::AppendEntriesRequest;
use crate::raft::AppendEntriesResponse;
use crate::replication::request::Replicate;
use crate::replication::request_id::RequestId;
use crate::replication::response::ReplicationResult;
use crate::replication::response::Response;
use crate::replication::ReplicationSessionId;
use crate::type_config::alias::InstantOf;
use crate::type_config::TypeConfigExt;
use crate::LogId;
use crate::RaftTypeConfig;

/// The log id the follower is known to hold, shared with the replication loop that learns it.
pub(crate) type SharedMatching<NID> = Arc<Mutex<Option<LogId<NID>>>>;

pub(crate) struct HeartbeatLane<C>
where C: RaftTypeConfig
{
    pub(crate) target: C::NodeId,
    pub(crate) session_id: ReplicationSessionId<C::NodeId>,
    pub(crate) config: Arc<Config>,
    pub(crate) committed: Option<LogId<C::NodeId>>,
    pub(crate) matching: SharedMatching<C::NodeId>,
    pub(crate) tx_raft_core: mpsc::UnboundedSender<Notify<C>>,
}

impl<C> HeartbeatLane<C>
where C: RaftTypeConfig
{
    /// Forwards `rx_event` to `tx_loop` until either side closes, sending heartbeats on
    /// `networks` as the events ask for them: one at a time, or two when a commit index
    /// arrives that the heartbeat in flight does not carry (one network client each).
    pub(crate) async fn run<NW>(
        mut self,
        networks: Vec<NW>,
        mut rx_event: mpsc::UnboundedReceiver<Replicate<C>>,
        tx_loop: mpsc::UnboundedSender<Replicate<C>>,
    ) where
        NW: RaftNetwork<C>,
    {
        let mut idle = networks;
        let mut in_flight = FuturesUnordered::new();
        // The highest commit index a heartbeat in flight carries.
        let mut carried: Option<LogId<C::NodeId>> = None;
        let mut wanted = false;
        // After a failed heartbeat the next goes no sooner than a heartbeat interval after
        // the failed one was sent (after a timeout: at once), so an unreachable follower
        // is not called again for every commit.
        let mut not_before: Option<InstantOf<C>> = None;
        let ttl = Duration::from_millis(self.config.heartbeat_interval);

        loop {
            if not_before.is_some_and(|t| C::now() >= t) {
                not_before = None;
            }
            // A heartbeat in flight already tells the follower everything but a newer
            // commit index: only that is worth a second one (its answer would otherwise
            // wait behind the first's round trip).
            let worth_sending = in_flight.is_empty() || (self.committed > carried && !idle.is_empty());
            if wanted && not_before.is_none() && worth_sending {
                if let Some(mut network) = idle.pop() {
                    wanted = false;
                    if in_flight.is_empty() || self.committed > carried {
                        carried = self.committed.clone();
                    }
                    let prev =
                        self.matching.lock().map(|m| m.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone());
                    let request = AppendEntriesRequest {
                        vote: self.session_id.vote_ref().clone(),
                        prev_log_id: prev.clone(),
                        leader_commit: self.committed.clone(),
                        entries: vec![],
                    };
                    let leader_time = C::now();
                    in_flight.push(Box::pin(async move {
                        let answer = C::timeout(ttl, network.append_entries(request, RPCOption::new(ttl))).await;
                        (network, answer, leader_time, prev)
                    }) as BoxFuture<'static, _>);
                }
            }

            let pause = match not_before {
                Some(t) if wanted => Either::Left(C::sleep(t - C::now())),
                _ => Either::Right(futures::future::pending::<()>()),
            };

            select! {
                event = rx_event.recv() => {
                    let Some(event) = event else { return };
                    wanted |= self.note(&event);
                    if tx_loop.send(event).is_err() {
                        return;
                    }
                }
                Some((network, answer, leader_time, prev)) = in_flight.next(), if !in_flight.is_empty() => {
                    idle.push(network);
                    let answer = match answer {
                        Ok(answer) => DecomposeResult::<C, _, _>::decompose_infallible(answer)
                            .map_err(|e: RPCError<C::NodeId, C::Node>| e.to_string()),
                        Err(_elapsed) => Err(format!("timed out after {:?}", ttl)),
                    };
                    if self.report(answer, leader_time, prev) {
                        not_before = Some(leader_time + ttl);
                    }
                }
                _ = pause => {}
            }
        }
    }

    /// Takes what the lane needs from an event; true when the event asks for a heartbeat.
    fn note(&mut self, event: &Replicate<C>) -> bool {
        match event {
            Replicate::Committed(c) => {
                if c > &self.committed {
                    self.committed = c.clone();
                }
                true
            }
            Replicate::Heartbeat => true,
            Replicate::Data(_) => false,
        }
    }

    /// Reports a heartbeat's answer to RaftCore as the replication loop would; true when
    /// the heartbeat failed.
    fn report(
        &self,
        answer: Result<AppendEntriesResponse<C::NodeId>, String>,
        leader_time: InstantOf<C>,
        prev: Option<LogId<C::NodeId>>,
    ) -> bool {
        let progress = |result: Result<ReplicationResult<C>, String>| Notify::Network {
            response: Response::Progress {
                target: self.target.clone(),
                request_id: RequestId::new_heartbeat(),
                result,
                session_id: self.session_id.clone(),
            },
        };

        match answer {
            Ok(AppendEntriesResponse::Success) => {
                let _ = self.tx_raft_core.send(progress(Ok(ReplicationResult::new(leader_time, Ok(prev)))));
                false
            }
            Ok(AppendEntriesResponse::PartialSuccess(matching)) => {
                let _ = self.tx_raft_core.send(progress(Ok(ReplicationResult::new(leader_time, Ok(matching)))));
                false
            }
            Ok(AppendEntriesResponse::Conflict) => {
                // prev_log_id = None never conflicts.
                if let Some(conflict) = prev {
                    let _ = self.tx_raft_core.send(progress(Ok(ReplicationResult::new(leader_time, Err(conflict)))));
                }
                false
            }
            Ok(AppendEntriesResponse::HigherVote(vote)) => {
                let _ = self.tx_raft_core.send(Notify::Network {
                    response: Response::HigherVote {
                        target: self.target.clone(),
                        higher: vote,
                        sender_vote: self.session_id.vote_ref().clone(),
                    },
                });
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "heartbeat to target={} failed", self.target);
                let _ = self.tx_raft_core.send(progress(Err(err)));
                true
            }
        }
    }
}
