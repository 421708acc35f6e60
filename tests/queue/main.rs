//! The queue's guarantees at the store and runtime level, in-process against a real PostgreSQL: claims are
//! exclusive and ordered, writes are fenced by the lease token, terminal states never change, retries back
//! off, timeouts, cancellation, panics, heartbeats, retention, rescue and graceful shutdown.
//!
//! Every test gets a fresh database. Tests await conditions (`eventually`, channels) instead of sleeping.

#[path = "../common/mod.rs"]
mod common;

mod support;

mod claim;
mod fencing;
mod lanes;
mod local_queue;
mod maintenance;
mod retries;
mod runtime;
mod shutdown;
mod tenants;
mod terminal;
