//! Run with: cargo run -p order-saga
//!
//! Starts an inventory and a payment service on 127.0.0.1:0 and places three orders with a
//! durable saga (SQLite in a temporary directory) whose steps call them through archon-client:
//! one goes through, one is declined by the card (its reservation is released), one goes
//! through while the payment service fails every first attempt. Prints what happened and what
//! each service applied. Exits by itself.
#![allow(clippy::print_stdout)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!(
        "{:<6} {:<8} {:<12} reservation / charge / shipment",
        "order", "sku", "saga"
    );
    let (_, participants) = order_saga::run(|p| {
        let o = &p.order;
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        println!(
            "{:<6} {:<8} {:<12} {} / {} / {}",
            o.id,
            o.sku,
            p.status.as_str(),
            show(&o.reservation),
            show(&o.charge),
            show(&o.shipment)
        );
    })
    .await?;
    let (inv, pay) = (&participants.inventory, &participants.payments);
    println!(
        "inventory: {} requests; {} reserved, {} released, {} shipped",
        inv.calls(),
        inv.applied("reserve"),
        inv.applied("release"),
        inv.applied("ship")
    );
    println!(
        "payments:  {} requests; {} charged",
        pay.calls(),
        pay.applied("charge")
    );
    Ok(())
}
