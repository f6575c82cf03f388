//! Throughput benchmarks (filled in later).
fn main() {}
