//! Process-level guarantees (DESIGN §3, §5): the real `jobdock` binary as child processes — killed with
//! SIGKILL, stopped with SIGSTOP, terminated with SIGTERM, cut off from PostgreSQL — against a real
//! PostgreSQL, a fresh database per test.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod cluster;
mod config;
mod support;

mod crash;
mod durability;
mod external_worker;
mod fencing;
mod limits;
mod outage;
mod replicas;
mod shutdown;
mod startup;
