//! The demo does what its output claims.
#![allow(clippy::unwrap_used)]

#[tokio::test]
async fn breaker_opens_in_the_outage_and_closes_on_recovery() {
    let phases = resilient_client::run(|_| {}).await.unwrap();
    let [healthy, flaky, outage, recovery] = phases.as_slice() else {
        panic!("four phases");
    };
    assert_eq!((healthy.ok, healthy.server_hits), (40, 40));
    assert_eq!(flaky.ok, 40, "retries hide a 50 % failure rate");
    assert!(flaky.server_hits > 40);
    assert!(outage.rejected > 0);
    assert!(outage.server_hits < 40, "the open breaker sheds load");
    assert_eq!(recovery.ok, 40);
    assert_eq!(recovery.breaker, "closed");
}
