//! The demo does what its output claims, against the real participant servers.
#![allow(clippy::unwrap_used)]

use archon_saga::SagaStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_complete_or_compensate_and_every_effect_lands_once() {
    let (placed, participants) = order_saga::run(|_| {}).await.unwrap();
    let [ok, declined, flaky] = placed.as_slice() else {
        panic!("three orders");
    };
    assert_eq!(ok.status, SagaStatus::Completed);
    assert!(ok.order.reservation.is_some() && ok.order.charge.is_some());
    assert!(ok.order.shipment.is_some());

    // The card refused: the reservation was released, nothing charged or shipped.
    assert_eq!(declined.status, SagaStatus::Compensated);
    assert_eq!(declined.order.reservation, None);
    assert_eq!(declined.order.charge, None);
    assert_eq!(declined.order.shipment, None);

    // The payment service failed the first attempt; archon-client retried the POST (it
    // carries the step's idempotency key) and the saga never saw the failure.
    assert_eq!(flaky.status, SagaStatus::Completed);
    assert!(flaky.order.charge.is_some());

    let (inv, pay) = (&participants.inventory, &participants.payments);
    assert_eq!(inv.applied("reserve"), 3);
    assert_eq!(
        inv.applied("release"),
        1,
        "only the declined order was released"
    );
    assert_eq!(inv.applied("ship"), 2);
    assert_eq!(inv.calls(), 6, "one request per inventory effect");
    assert_eq!(pay.applied("charge"), 2);
    // Orders 1 and 3 charged, order 2 declined once (a 402 is not retried), order 3's first
    // attempt refused with 503 and retried.
    assert_eq!(pay.calls(), 4);
}
