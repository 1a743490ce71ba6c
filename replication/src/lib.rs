//! Blob movement between Meridian regions.
//!
//! This crate owns what a copy of a blob must pass before it counts: the digest check
//! ([`digest`]). The transfer queue, source choice and resumable streams build on it
//! (see `docs/architecture.md`); `node` implements the storage traits they need, so
//! this crate never depends on `node`.

pub mod digest;

pub use digest::{Algorithm, Digest, DigestError, DigestHasher};
