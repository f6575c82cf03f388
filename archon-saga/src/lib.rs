//! # archon-saga
//!
//! **Status: planned.** This crate will hold a durable saga orchestrator:
//!
//! - a typed definition builder: compensatable steps, one pivot, retriable steps;
//! - an engine with per-step retries, timeouts and durable timers, compensating in reverse order;
//! - stores behind one trait: in-memory, SQLite (the embedded default) and PostgreSQL (several
//!   orchestrator instances sharing work through leases with fencing tokens);
//! - crash recovery, parked sagas and an operator API, versioned definitions.
//!
//! Nothing is exported yet.
