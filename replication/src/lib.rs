//! Blob movement between Meridian regions.
//!
//! This crate owns what a copy of a blob must pass before it counts — the digest check
//! ([`digest`]) — and how a copy is fetched from the regions that hold it, nearest first,
//! resuming from an offset when a source fails ([`fetch`]), background streams stepping
//! aside for a client's ([`yielding`]). `node` implements the sink the
//! bytes go to, so this crate never depends on `node`.

pub mod digest;
pub mod fetch;
pub mod throttle;
pub mod yielding;

pub use digest::{Algorithm, Digest, DigestError, DigestHasher};
pub use fetch::{fetch_verified, ChunkSink, FetchError, FetchPriority, FetchReport, Holder};
pub use throttle::RegionThrottle;
pub use yielding::ClientFetches;
