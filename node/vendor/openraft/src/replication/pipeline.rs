//! Meridian patch: the replication stream's loop when the network offers an ordered
//! AppendEntries stream (`RaftNetwork::append_pipeline`).
//!
//! Upstream 0.9 sends one AppendEntries to a target and waits for its answer before the
//! next: a log appended meanwhile waits up to a round trip to the target before it is sent.
//! Here RaftCore hands this loop log segments while earlier ones are unanswered (see
//! `ProgressEntry::next_pipelined`, all under one request id), and the loop sends each as
//! soon as it has it, behind the ones in flight, on one ordered stream. The answers come in
//! the order sent; each is reported to RaftCore as upstream reports the answer to its one
//! request, so each acknowledges a prefix of what RaftCore has in flight.
//!
//! If an answer is a conflict or an error, or the oldest unanswered request times out, the
//! segments after it cannot succeed (each names the one before as `prev_log_id`): the loop
//! reports that first failure only, drops the stream with everything still in flight or
//! queued under that request id, and opens a new stream. RaftCore, told of the failure,
//! starts again from the last acknowledged log id with a new request id, as upstream.
//!
//! Snapshots are sent as upstream: RaftCore never sends one while logs are in flight.

use std::ops::ControlFlow;

use anyerror::AnyError;
use futures::future::Either;
use tokio::select;

use crate::error::decompose::DecomposeResult;
use crate::error::HigherVote;
use crate::error::NetworkError;
use crate::error::RPCError;
use crate::error::ReplicationClosed;
use crate::error::ReplicationError;
use crate::error::Timeout;
use crate::log_id::LogIdOptionExt;
use crate::log_id_range::LogIdRange;
use crate::network::AppendResult;
use crate::network::RPCTypes;
use crate::network::RaftNetwork;
use crate::network::RaftNetworkFactory;
use crate::raft::AppendEntriesRequest;
use crate::raft::AppendEntriesResponse;
use crate::replication::request::Data;
use crate::replication::request_id::RequestId;
use crate::replication::response::ReplicationResult;
use crate::replication::ReplicationCore;
use crate::storage::RaftLogReader;
use crate::storage::RaftLogStorage;
use crate::type_config::alias::InstantOf;
use crate::type_config::TypeConfigExt;
use crate::RaftLogId;
use crate::RaftTypeConfig;

/// One AppendEntries sent on the pipeline, not answered yet.
pub(crate) struct SentAppend<C: RaftTypeConfig> {
    request_id: RequestId,
    /// `prev_log_id` and the last log id it carries.
    range: LogIdRange<C::NodeId>,
    /// When it was sent: the leader's clock for the lease, as upstream.
    leader_time: InstantOf<C>,
    deadline: InstantOf<C>,
}

/// What woke the loop up.
enum Woken<C: RaftTypeConfig> {
    Event(Option<crate::replication::request::Replicate<C>>),
    Answer(AppendResult<C>),
    Timer,
}

type Step = Result<ControlFlow<()>, ReplicationClosed>;

impl<C, N, LS> ReplicationCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    pub(super) async fn main_pipelined(mut self) -> Result<(), ReplicationClosed> {
        loop {
            // Snapshots (and their callbacks) run as upstream; logs never land here
            // (`process_event` queues them in `to_send`), heartbeats are the lane's.
            if let Some(d) = self.next_action.take() {
                let request_id = d.request_id();
                let res = match d {
                    Data::Snapshot(snap) => self.stream_snapshot(snap).await,
                    Data::SnapshotCallback(resp) => self.handle_snapshot_callback(resp),
                    Data::Logs(_) | Data::Heartbeat => Ok(None),
                };
                match res {
                    Ok(_) => self.backoff = None,
                    Err(err) => {
                        if self.on_replication_error(err, request_id, None)?.is_break() {
                            return Ok(());
                        }
                        self.start_backoff();
                    }
                }
            }

            if self.may_send() && self.send_queued().await?.is_break() {
                return Ok(());
            }

            if self.wait_pipelined().await?.is_break() {
                return Ok(());
            }
        }
    }

    /// Whether the backoff after an unreachable target is over.
    fn may_send(&mut self) -> bool {
        match self.backoff_until {
            Some(until) if C::now() < until => false,
            _ => {
                self.backoff_until = None;
                true
            }
        }
    }

    /// After a failure while the target is unreachable: send nothing for the next backoff
    /// interval (upstream sleeps it; this loop keeps reading events meanwhile).
    fn start_backoff(&mut self) {
        if let Some(backoff) = &mut self.backoff {
            let interval = backoff.next().unwrap_or(std::time::Duration::from_millis(500));
            self.backoff_until = Some(C::now() + interval);
        }
    }

    /// Send every queued segment, merging segments queued back to back into one request
    /// (up to `max_payload_entries`), so that a busy leader sends fewer, larger requests.
    async fn send_queued(&mut self) -> Step {
        while let Some(first) = self.to_send.pop_front() {
            let request_id = first.request_id();
            let mut range = first.into_data();
            while let Some(next) = self.to_send.front() {
                if next.request_id() != request_id || next.data().prev != range.last {
                    break;
                }
                range.last = next.data().last.clone();
                self.to_send.pop_front();
            }
            if self.send_range(request_id, range).await?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Send the logs of `range` on the pipeline, in requests of at most
    /// `max_payload_entries` (fewer after `PayloadTooLarge`).
    async fn send_range(&mut self, request_id: RequestId, range: LogIdRange<C::NodeId>) -> Step {
        let mut prev = range.prev;
        while prev < range.last {
            let start = prev.next_index();
            let mut end = std::cmp::min(range.last.next_index(), start + self.config.max_payload_entries);
            if let Some(hint) = self.entries_hint.get() {
                end = std::cmp::min(end, start + hint.max(1));
            }

            let logs = match self.log_reader.limited_get_log_entries(start, end).await {
                Ok(logs) => logs,
                Err(e) => return self.on_replication_error(ReplicationError::StorageError(e), request_id, None),
            };
            let Some(last) = logs.last().map(|e| e.get_log_id().clone()) else {
                let empty = AnyError::error(format!("the log store returned no logs in [{start}, {end})"));
                return self.fail_pipeline(request_id, RPCError::Network(NetworkError::new(&empty)));
            };

            let rpc = AppendEntriesRequest {
                vote: self.session_id.vote_ref().clone(),
                prev_log_id: prev.clone(),
                leader_commit: self.committed.clone(),
                entries: logs,
            };
            let leader_time = C::now();
            if self.pipeline.is_none() {
                self.pipeline = self.network.append_pipeline();
            }
            let Some(pipeline) = self.pipeline.as_mut() else {
                tracing::error!("pipeline_depth is set but the network offers no append pipeline");
                let none = AnyError::error("the network offers no append pipeline");
                return self.fail_pipeline(request_id, RPCError::Network(NetworkError::new(&none)));
            };
            match DecomposeResult::<C, _, _>::decompose_infallible(pipeline.send(rpc)) {
                Ok(()) => {
                    let deadline = leader_time + self.append_timeout();
                    self.in_flight.push_back(SentAppend {
                        request_id,
                        range: LogIdRange::new(prev, Some(last.clone())),
                        leader_time,
                        deadline,
                    });
                    prev = Some(last);
                }
                // Send the same logs again in smaller requests.
                Err(RPCError::PayloadTooLarge(too_large)) => self.update_hint(&too_large),
                Err(err) => return self.fail_pipeline(request_id, err),
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Wait for an event from RaftCore, the next answer, or the oldest request's deadline
    /// (or the end of a backoff), and handle it.
    async fn wait_pipelined(&mut self) -> Step {
        if self.next_action.is_some() || (!self.to_send.is_empty() && self.backoff_until.is_none()) {
            self.try_drain_events().await?;
            return Ok(ControlFlow::Continue(()));
        }

        let head_deadline = self.in_flight.front().map(|s| s.deadline);
        let backoff_until = self.backoff_until.filter(|_| !self.to_send.is_empty());
        let timer = head_deadline.into_iter().chain(backoff_until).min();

        let woken = {
            let events = &mut self.rx_event;
            let answer = match (&mut self.pipeline, self.in_flight.is_empty()) {
                (Some(pipeline), false) => Either::Left(pipeline.recv()),
                _ => Either::Right(futures::future::pending()),
            };
            let timer = match timer {
                Some(t) => {
                    let now = C::now();
                    Either::Left(C::sleep(if t > now { t - now } else { Default::default() }))
                }
                None => Either::Right(futures::future::pending::<()>()),
            };
            // An answer that is ready wins over the deadline it would otherwise miss.
            select! {
                biased;
                answer = answer => Woken::Answer(answer),
                event = events.recv() => Woken::Event(event),
                _ = timer => Woken::Timer,
            }
        };

        match woken {
            Woken::Event(None) => Err(ReplicationClosed::new("RaftCore closed replication")),
            Woken::Event(Some(event)) => {
                self.process_event(event);
                self.try_drain_events().await?;
                Ok(ControlFlow::Continue(()))
            }
            Woken::Answer(answer) => self.on_answer(answer),
            Woken::Timer => {
                let Some(head) = self.in_flight.front() else {
                    return Ok(ControlFlow::Continue(()));
                };
                if C::now() < head.deadline {
                    return Ok(ControlFlow::Continue(()));
                }
                let request_id = head.request_id;
                let timeout = Timeout {
                    action: RPCTypes::AppendEntries,
                    id: self.session_id.vote_ref().leader_id().voted_for().unwrap_or_else(|| self.target.clone()),
                    target: self.target.clone(),
                    timeout: self.append_timeout(),
                };
                self.fail_pipeline(request_id, RPCError::Timeout(timeout))
            }
        }
    }

    /// Report the answer to the oldest request in flight.
    fn on_answer(&mut self, answer: AppendResult<C>) -> Step {
        let Some(sent) = self.in_flight.pop_front() else {
            return Ok(ControlFlow::Continue(()));
        };
        // The next request's time starts now: the target handles them one after another,
        // so time spent waiting behind this one is not the target's slowness.
        let rearmed = C::now() + self.append_timeout();
        if let Some(next) = self.in_flight.front_mut() {
            next.deadline = std::cmp::max(next.deadline, rearmed);
        }
        // A fatal error on the target reads as unreachable, as upstream.
        let answer = DecomposeResult::<C, _, _>::decompose_infallible(answer);
        tracing::debug!(range = display(&sent.range), answer = debug(&answer), "pipelined append answered");

        match answer {
            Ok(AppendEntriesResponse::Success) => {
                self.backoff = None;
                self.send_progress(
                    sent.request_id,
                    ReplicationResult::new(sent.leader_time, Ok(sent.range.last)),
                );
                Ok(ControlFlow::Continue(()))
            }
            Ok(AppendEntriesResponse::PartialSuccess(matching)) if matching == sent.range.last => {
                self.backoff = None;
                self.send_progress(sent.request_id, ReplicationResult::new(sent.leader_time, Ok(matching)));
                Ok(ControlFlow::Continue(()))
            }
            Ok(AppendEntriesResponse::PartialSuccess(matching)) => {
                // The rest of this request, and everything behind it, goes again.
                Self::debug_assert_partial_success(&sent.range, &matching);
                self.backoff = None;
                if matching > sent.range.prev {
                    self.send_progress(sent.request_id, ReplicationResult::new(sent.leader_time, Ok(matching)));
                }
                let partial = AnyError::error("the target took part of a pipelined AppendEntries");
                self.fail_pipeline(sent.request_id, RPCError::Network(NetworkError::new(&partial)))
            }
            Ok(AppendEntriesResponse::HigherVote(vote)) => {
                let sender_vote = self.session_id.vote_ref().clone();
                let higher = ReplicationError::HigherVote(HigherVote {
                    higher: vote,
                    sender_vote,
                });
                self.on_replication_error(higher, sent.request_id, None)
            }
            Ok(AppendEntriesResponse::Conflict) => match sent.range.prev.clone() {
                Some(conflict) => {
                    self.send_progress(sent.request_id, ReplicationResult::new(sent.leader_time, Err(conflict)));
                    self.drop_pipeline(sent.request_id);
                    Ok(ControlFlow::Continue(()))
                }
                // `prev_log_id == None` never conflicts; if a target says so, start over.
                None => {
                    let odd = AnyError::error("the target refused an AppendEntries from the start of the log");
                    self.fail_pipeline(sent.request_id, RPCError::Network(NetworkError::new(&odd)))
                }
            },
            Err(err) => self.fail_pipeline(sent.request_id, err),
        }
    }

    /// Report `err` for `request_id` (RaftCore then ends that request and starts again),
    /// and drop everything else sent or queued under it.
    fn fail_pipeline(&mut self, request_id: RequestId, err: RPCError<C::NodeId, C::Node>) -> Step {
        let step = self.on_replication_error(ReplicationError::RPCError(err), request_id, None)?;
        self.drop_pipeline(request_id);
        self.start_backoff();
        Ok(step)
    }

    /// Forget what is in flight or queued under `request_id` and open a new stream: answers
    /// on the old one can no longer be matched to requests.
    fn drop_pipeline(&mut self, request_id: RequestId) {
        self.in_flight.clear();
        self.to_send.clear();
        self.dropped = Some(request_id);
        self.pipeline = self.network.append_pipeline();
    }
}
