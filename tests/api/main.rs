//! The HTTP contract (DESIGN §1), driven over a real socket against a real PostgreSQL.

#[path = "../common/mod.rs"]
mod common;

mod cancel_delete;
mod configured;
mod connections;
mod docs;
mod exec_kind;
mod forecast;
mod health;
mod http_kind;
mod intake;
mod keys;
mod kinds;
mod list_batch;
mod maintenance;
mod metrics;
mod monitor;
mod submit;
mod waiting;
mod webhooks;
mod worker;
