//! Meridian patch: an ordered stream of AppendEntries to one target (pipelining).

use futures::future::BoxFuture;

use crate::error::RPCError;
use crate::error::RaftError;
use crate::raft::AppendEntriesRequest;
use crate::raft::AppendEntriesResponse;
use crate::RaftTypeConfig;

/// The result of one AppendEntries sent through an [`AppendPipeline`].
pub type AppendResult<C> = Result<
    AppendEntriesResponse<<C as RaftTypeConfig>::NodeId>,
    RPCError<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node, RaftError<<C as RaftTypeConfig>::NodeId>>,
>;

/// One ordered stream of AppendEntries to one target, opened by
/// [`RaftNetwork::append_pipeline`](crate::network::RaftNetwork::append_pipeline).
///
/// The target handles the requests in the order they were sent, and the answers come back
/// in that order, one per request. After an error the stream is done: the replication
/// stream drops it and opens another.
pub trait AppendPipeline<C>: Send + 'static
where C: RaftTypeConfig
{
    /// Queue one request behind the ones sent before, without waiting for any answer.
    ///
    /// An error means this request was not sent: `PayloadTooLarge` asks for fewer entries;
    /// anything else ends the stream.
    fn send(&mut self, rpc: AppendEntriesRequest<C>) -> Result<(), RPCError<C::NodeId, C::Node, RaftError<C::NodeId>>>;

    /// The answer to the oldest request not answered yet. Cancel-safe: dropping the future
    /// before it is ready loses no answer.
    fn recv(&mut self) -> BoxFuture<'_, AppendResult<C>>;
}
