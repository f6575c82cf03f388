//! Benchmarks of `archon-client`'s layers (see `benches/layers.rs`).
//!
//! They live in their own package so that they are built as a user builds `archon-client`:
//! `archon-client`'s tests enable tokio's `test-util` (paused clocks), under which every
//! `tokio::time::Instant::now()` goes through the mock clock's mutex; a user's release build
//! reads the system clock directly.
//!
//! Run with: `cargo bench -p archon-client-bench --bench layers`
