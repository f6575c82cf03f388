use std::time::Duration;

use futures::StreamExt;

use super::*;

fn event(n: usize) -> Envelope {
    Envelope::builder("/test", "test.v1")
        .data("text/plain", n.to_string())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_group_makes_publish_wait_then_time_out() {
    let config = MemoryConfig::default()
        .with_capacity(2)
        .with_publish_timeout(Duration::from_secs(1));
    let bus = MemoryBus::with_config(config);
    let mut sub = bus
        .subscribe("t", SubscribeOptions::group("slow"))
        .await
        .unwrap();
    bus.publish("t", event(1)).await.unwrap();
    bus.publish("t", event(2)).await.unwrap();
    let err = bus.publish("t", event(3)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                operation: "publish",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(bus.pending("t", "slow"), 2, "memory stays bounded");

    // Settling one frees room: a waiting publish goes through.
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.publish("t", event(4)).await }
    });
    tokio::task::yield_now().await;
    sub.next().await.unwrap().unwrap().ack().await.unwrap();
    waiting.await.unwrap().unwrap();
    assert_eq!(bus.pending("t", "slow"), 2);
}

#[tokio::test]
async fn a_dropped_delivery_is_redelivered_at_once() {
    let bus = MemoryBus::new();
    let mut sub = bus
        .subscribe("t", SubscribeOptions::group("g"))
        .await
        .unwrap();
    bus.publish("t", event(1)).await.unwrap();
    let first = sub.next().await.unwrap().unwrap();
    let id = first.envelope().id().to_owned();
    drop(first);
    let again = sub.next().await.unwrap().unwrap();
    assert_eq!(again.envelope().id(), id);
    assert_eq!(again.attempt(), 2);
    again.ack().await.unwrap();
    assert_eq!(bus.pending("t", "g"), 0);
}

#[tokio::test]
async fn closing_the_bus_ends_streams_and_refuses_publishes() {
    let bus = MemoryBus::new();
    let mut sub = bus
        .subscribe("t", SubscribeOptions::group("g"))
        .await
        .unwrap();
    let reader = tokio::spawn(async move { sub.next().await.is_none() });
    tokio::task::yield_now().await;
    bus.shutdown();
    assert!(reader.await.unwrap(), "stream ends on close");
    assert!(matches!(
        bus.publish("t", event(1)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        bus.subscribe("t", SubscribeOptions::default()).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn oversized_events_are_rejected_at_publish() {
    let config = MemoryConfig::default().with_max_event_size(1024);
    let bus = MemoryBus::with_config(config);
    let _sub = bus
        .subscribe("t", SubscribeOptions::default())
        .await
        .unwrap();
    let big = Envelope::builder("/a", "t.v1")
        .data("application/octet-stream", vec![0u8; 2048])
        .build()
        .unwrap();
    assert!(matches!(
        bus.publish("t", big).await,
        Err(Error::TooLarge { limit: 1024, .. })
    ));
    assert_eq!(bus.pending("t", "default"), 0);
}

#[tokio::test]
async fn a_dropped_subscription_gives_back_prefetched_events() {
    let bus = MemoryBus::new();
    let mut first = bus
        .subscribe("t", SubscribeOptions::group("g"))
        .await
        .unwrap();
    for n in 0..10 {
        bus.publish("t", event(n)).await.unwrap();
    }
    let d = first.next().await.unwrap().unwrap();
    drop(first); // nine prefetched events go back to the group
    d.ack().await.unwrap();
    let mut second = bus
        .subscribe("t", SubscribeOptions::group("g"))
        .await
        .unwrap();
    for n in 1..10 {
        let d = second.next().await.unwrap().unwrap();
        assert_eq!(&d.envelope().data()[..], n.to_string().as_bytes());
        assert_eq!(d.attempt(), 1, "never handed out, so not counted");
        d.ack().await.unwrap();
    }
}

#[tokio::test]
async fn settling_twice_is_impossible_and_late_settles_work_after_the_stream_is_gone() {
    let bus = MemoryBus::new();
    let mut sub = bus
        .subscribe("t", SubscribeOptions::group("g"))
        .await
        .unwrap();
    bus.publish("t", event(1)).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    drop(sub);
    d.ack().await.unwrap();
    assert_eq!(bus.pending("t", "g"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_delayed_nack_holds_back_later_events_of_the_same_key_only() {
    let bus = MemoryBus::new();
    let mut sub = bus
        .subscribe("t", SubscribeOptions::group("g"))
        .await
        .unwrap();
    let keyed = |n: usize, key: &str| {
        Envelope::builder("/test", "test.v1")
            .partition_key(key)
            .data("text/plain", n.to_string())
            .build()
            .unwrap()
    };
    bus.publish("t", keyed(1, "a")).await.unwrap();
    bus.publish("t", keyed(2, "a")).await.unwrap();
    bus.publish("t", keyed(3, "b")).await.unwrap();
    let body = |d: &crate::Delivery| String::from_utf8(d.envelope().data().to_vec()).unwrap();

    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(body(&first), "1");
    first.nack(Duration::from_secs(10)).await.unwrap();
    // Key "b" is not held back by key "a".
    let other = sub.next().await.unwrap().unwrap();
    assert_eq!(body(&other), "3");
    other.ack().await.unwrap();
    // Event 2 of key "a" waits behind the delayed event 1.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .is_err()
    );
    let again = sub.next().await.unwrap().unwrap();
    assert_eq!((body(&again), again.attempt()), ("1".to_owned(), 2));
    again.ack().await.unwrap();
    let second = sub.next().await.unwrap().unwrap();
    assert_eq!(body(&second), "2");
    second.ack().await.unwrap();
    assert_eq!(bus.pending("t", "g"), 0);
}
