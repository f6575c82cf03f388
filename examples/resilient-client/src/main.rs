//! Run with: cargo run -p resilient-client
//!
//! Starts a flaky HTTP server on 127.0.0.1:0 and calls it through archon-client's resilience
//! stack through four phases (healthy, flaky, outage, recovery), printing what the retries
//! and the circuit breaker did. Exits by itself.
#![allow(clippy::print_stdout)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!(
        "{:<9} {:>4} {:>7} {:>9} {:>12}  breaker",
        "phase", "ok", "failed", "rejected", "server hits"
    );
    resilient_client::run(|p| {
        println!(
            "{:<9} {:>4} {:>7} {:>9} {:>12}  {}",
            p.name, p.ok, p.failed, p.rejected, p.server_hits, p.breaker
        );
    })
    .await?;
    Ok(())
}
