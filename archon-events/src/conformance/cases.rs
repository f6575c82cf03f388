//! The cases. Each takes a [`Harness`], uses its own topic and panics on a broken guarantee.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archon_core::context::Metadata;
use futures::StreamExt as _;
use tokio::sync::mpsc;

use super::Harness;
use crate::router::{EventContext, HandlerError, Route, Router};
use crate::{
    DeadLetter, Delivery, Envelope, Error, Event, EventBus, JsonCodec, StartPosition,
    SubscribeOptions, Subscription, dead_letter_headers,
};

const TYPE: &str = "archon.conformance.event.v1";
const SOURCE: &str = "/archon/conformance";

/// Whether the stress sizes run (`ARCHON_FULL=1`).
pub fn full() -> bool {
    std::env::var("ARCHON_FULL").is_ok_and(|v| v == "1")
}

fn size(short: usize, full_size: usize) -> usize {
    if full() { full_size } else { short }
}

fn patience() -> Duration {
    Duration::from_secs(if full() { 300 } else { 30 })
}

/// A fresh topic name, `topic-<uuid>`.
pub fn topic() -> String {
    format!("topic-{}", uuid::Uuid::now_v7())
}

fn event(n: usize) -> Envelope {
    Envelope::builder(SOURCE, TYPE)
        .header("x-n", n.to_string())
        .data("application/json", format!(r#"{{"n":{n}}}"#))
        .build()
        .expect("valid test event")
}

fn keyed(n: usize, key: usize, seq: usize) -> Envelope {
    Envelope::builder(SOURCE, TYPE)
        .partition_key(format!("key-{key}"))
        .header("x-n", n.to_string())
        .header("x-seq", seq.to_string())
        .data("application/json", format!(r#"{{"n":{n}}}"#))
        .build()
        .expect("valid test event")
}

fn header_num(env: &Envelope, name: &str) -> usize {
    env.header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("event {} has no numeric {name} header", env.id()))
}

async fn connect<H: Harness>(h: &H) -> Arc<dyn EventBus> {
    h.connect().await.expect("connect to the broker")
}

async fn subscribe(
    bus: &Arc<dyn EventBus>,
    topic: &str,
    options: SubscribeOptions,
) -> Subscription {
    bus.subscribe(topic, options).await.expect("subscribe")
}

async fn next(sub: &mut Subscription) -> Delivery {
    match tokio::time::timeout(patience(), sub.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
        Ok(None) => panic!("subscription ended early"),
        Err(_) => panic!("no delivery within {:?}", patience()),
    }
}

/// Reads and acks until `n` distinct events arrived; returns them by id.
async fn receive(sub: &mut Subscription, n: usize) -> HashMap<String, Envelope> {
    let mut got = HashMap::new();
    let deadline = tokio::time::Instant::now() + patience();
    while got.len() < n {
        let delivery = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
            Ok(None) => panic!("subscription ended after {} of {n} events", got.len()),
            Err(_) => panic!("only {} of {n} events arrived", got.len()),
        };
        got.insert(
            delivery.envelope().id().to_owned(),
            delivery.envelope().clone(),
        );
        delivery.ack().await.expect("ack");
    }
    got
}

async fn expect_nothing(sub: &mut Subscription, wait: Duration) {
    if let Ok(Some(item)) = tokio::time::timeout(wait, sub.next()).await {
        panic!("expected no delivery, got {item:?}");
    }
}

async fn publish_all(bus: &Arc<dyn EventBus>, topic: &str, events: &[Envelope]) {
    for e in events {
        bus.publish(topic, e.clone()).await.expect("publish");
    }
}

fn ids(events: &[Envelope]) -> HashSet<String> {
    events.iter().map(|e| e.id().to_owned()).collect()
}

fn skip(case: &str, why: &str) {
    tracing::info!(case, why, "conformance case skipped");
}

/// Watermill `TestPublishSubscribe`: 100 events arrive with payload, attributes and headers
/// intact.
pub async fn publish_subscribe<H: Harness>(h: &H) {
    let bus = connect(h).await;
    let t = topic();
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let events: Vec<_> = (0..100).map(event).collect();
    publish_all(&bus, &t, &events).await;
    let got = receive(&mut sub, events.len()).await;
    for e in &events {
        assert_eq!(
            got.get(e.id()),
            Some(e),
            "event arrived changed or not at all"
        );
    }
}

/// Watermill `TestConcurrentSubscribe`: many publishers, many consumers in one group, none lost.
pub async fn concurrent_subscribe<H: Harness>(h: &H) {
    let n = size(100, 5_000);
    let publishers = size(10, 50);
    let consumers = size(10, 50);
    let t = topic();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let bus = connect(h).await;
        let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let _bus = bus;
            while let Some(Ok(d)) = sub.next().await {
                let id = d.envelope().id().to_owned();
                d.ack().await.expect("ack");
                if tx.send(id).is_err() {
                    break;
                }
            }
        }));
    }
    let events: Vec<_> = (0..n).map(event).collect();
    let expected = ids(&events);
    let mut pubs = Vec::new();
    for chunk in events.chunks(n.div_ceil(publishers)) {
        let bus = connect(h).await;
        let chunk = chunk.to_vec();
        let t = t.clone();
        pubs.push(tokio::spawn(
            async move { publish_all(&bus, &t, &chunk).await },
        ));
    }
    for p in pubs {
        p.await.expect("publisher task");
    }
    let mut got = HashSet::new();
    let deadline = tokio::time::Instant::now() + patience();
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(id)) => {
                got.insert(id);
            }
            _ => panic!("only {} of {n} events arrived", got.len()),
        }
    }
    assert_eq!(got, expected);
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
}

/// Watermill `TestPublishSubscribeInOrder`-style fan-out over many topics, none mixed up.
pub async fn many_topics<H: Harness>(h: &H) {
    let topics = size(10, 20);
    let per = size(50, 100);
    let bus = connect(h).await;
    let mut jobs = Vec::new();
    for _ in 0..topics {
        let bus = Arc::clone(&bus);
        jobs.push(tokio::spawn(async move {
            let t = topic();
            let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
            let events: Vec<_> = (0..per).map(event).collect();
            publish_all(&bus, &t, &events).await;
            let got = receive(&mut sub, per).await;
            assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), ids(&events));
        }));
    }
    for job in jobs {
        job.await.expect("topic job");
    }
}

/// Watermill `TestResendOnError`: a nacked event comes back.
pub async fn resend_on_nack<H: Harness>(h: &H) {
    let bus = connect(h).await;
    let t = topic();
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let e = event(1);
    bus.publish(&t, e.clone()).await.expect("publish");
    let first = next(&mut sub).await;
    assert_eq!(first.envelope().id(), e.id());
    assert_eq!(first.attempt(), 1);
    first.nack(Duration::ZERO).await.expect("nack");
    let again = next(&mut sub).await;
    assert_eq!(again.envelope().id(), e.id());
    assert!(again.attempt() >= 2, "redelivery counts attempts");
    again.ack().await.expect("ack");
    expect_nothing(&mut sub, Duration::from_millis(300)).await;
}

/// Watermill `TestNoAck`: with prefetch 1 the next event waits for the settlement.
pub async fn no_ack_blocks_next<H: Harness>(h: &H) {
    let f = h.features();
    if !(f.guaranteed_order || f.guaranteed_order_with_single_subscriber) {
        return skip("no_ack_blocks_next", "no ordering guarantee");
    }
    let bus = connect(h).await;
    let t = topic();
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g").with_prefetch(1)).await;
    publish_all(&bus, &t, &[event(0), event(1)]).await;
    let first = next(&mut sub).await;
    assert_eq!(header_num(first.envelope(), "x-n"), 0);
    expect_nothing(&mut sub, Duration::from_millis(300)).await;
    first.ack().await.expect("ack");
    let second = next(&mut sub).await;
    assert_eq!(header_num(second.envelope(), "x-n"), 1);
    second.ack().await.expect("ack");
}

/// Watermill `TestContinueAfterSubscribeClose`: successive subscribers that quit mid-way lose
/// nothing.
pub async fn continue_after_subscriber_close<H: Harness>(h: &H) {
    let total = size(50, 5_000);
    let batch = size(10, 1_000);
    let bus = connect(h).await;
    let t = topic();
    let mut sub = Some(subscribe(&bus, &t, SubscribeOptions::group("g")).await);
    let events: Vec<_> = (0..total).map(event).collect();
    publish_all(&bus, &t, &events).await;
    let mut got = HashSet::new();
    let mut rounds = 0;
    while got.len() < total {
        rounds += 1;
        assert!(rounds <= total, "no progress after {rounds} subscribers");
        let mut current = match sub.take() {
            Some(s) => s,
            None => subscribe(&connect(h).await, &t, SubscribeOptions::group("g")).await,
        };
        for _ in 0..batch {
            if got.len() == total {
                break;
            }
            let d = next(&mut current).await;
            got.insert(d.envelope().id().to_owned());
            d.ack().await.expect("ack");
        }
        // Quit mid-way: take one more and drop it unsettled, with the subscription.
        if got.len() < total
            && let Ok(Some(Ok(unsettled))) =
                tokio::time::timeout(Duration::from_millis(200), current.next()).await
        {
            drop(unsettled);
        }
        drop(current);
    }
    assert_eq!(got, ids(&events));
}

/// Watermill `TestConcurrentClose`: subscriptions closed concurrently, then a new one gets
/// everything.
pub async fn concurrent_close<H: Harness>(h: &H) {
    let k = size(10, 50);
    let t = topic();
    let mut jobs = Vec::new();
    for _ in 0..k {
        let bus = connect(h).await;
        let t = t.clone();
        jobs.push(tokio::spawn(async move {
            let sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
            drop(sub);
        }));
    }
    for job in jobs {
        job.await.expect("close job");
    }
    let bus = connect(h).await;
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let events: Vec<_> = (0..50).map(event).collect();
    publish_all(&bus, &t, &events).await;
    let got = receive(&mut sub, events.len()).await;
    assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), ids(&events));
}

/// Watermill `TestContinueAfterErrors`: three subscribers nack many times, then all events
/// still arrive.
pub async fn continue_after_errors<H: Harness>(h: &H) {
    let n = size(20, 50);
    let nacks = size(10, 100);
    let bus = connect(h).await;
    let t = topic();
    let mut first = Some(subscribe(&bus, &t, SubscribeOptions::group("g")).await);
    let events: Vec<_> = (0..n).map(event).collect();
    publish_all(&bus, &t, &events).await;
    for _ in 0..3 {
        let mut sub = match first.take() {
            Some(s) => s,
            None => subscribe(&bus, &t, SubscribeOptions::group("g")).await,
        };
        for _ in 0..nacks {
            next(&mut sub)
                .await
                .nack(Duration::ZERO)
                .await
                .expect("nack");
        }
    }
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let got = receive(&mut sub, n).await;
    assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), ids(&events));
}

fn assert_ordered(seen: &HashMap<String, Vec<usize>>) {
    for (key, seqs) in seen {
        let mut last = None;
        for &s in seqs {
            if let Some(l) = last {
                assert!(s >= l, "key {key} out of order: {seqs:?}");
            }
            last = Some(s);
        }
    }
}

/// Watermill `TestPublishSubscribeInOrder`: events of each key arrive in publish order.
pub async fn in_order_per_key<H: Harness>(h: &H) {
    if !h.features().per_key_order {
        return skip("in_order_per_key", "no per-key order");
    }
    let n = size(100, 1_000);
    let keys = 16;
    let bus = connect(h).await;
    let t = topic();
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let events: Vec<_> = (0..n).map(|i| keyed(i, i % keys, i / keys)).collect();
    publish_all(&bus, &t, &events).await;
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    let mut got = HashSet::new();
    while got.len() < n {
        let d = next(&mut sub).await;
        let env = d.envelope();
        got.insert(env.id().to_owned());
        seen.entry(env.partition_key().unwrap_or_default().to_owned())
            .or_default()
            .push(header_num(env, "x-seq"));
        d.ack().await.expect("ack");
    }
    assert_ordered(&seen);
}

/// Watermill `TestPublisherClose`: closing publishers loses nothing they accepted.
pub async fn publisher_close<H: Harness>(h: &H) {
    let n = size(100, 10_000);
    let publishers = size(5, 20);
    let t = topic();
    let sub_bus = connect(h).await;
    let mut sub = subscribe(&sub_bus, &t, SubscribeOptions::group("g")).await;
    let events: Vec<_> = (0..n).map(event).collect();
    let mut jobs = Vec::new();
    for chunk in events.chunks(n.div_ceil(publishers)) {
        let bus = connect(h).await;
        let chunk = chunk.to_vec();
        let t = t.clone();
        jobs.push(tokio::spawn(async move {
            publish_all(&bus, &t, &chunk).await;
            bus.close().await.expect("close publisher");
            let refused = bus.publish(&t, event(0)).await;
            assert!(
                matches!(refused, Err(Error::Closed)),
                "publish after close: {refused:?}"
            );
        }));
    }
    for job in jobs {
        job.await.expect("publisher task");
    }
    let got = receive(&mut sub, n).await;
    assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), ids(&events));
}

/// Watermill `TestTopic`: events stay on their topic.
pub async fn topic_isolation<H: Harness>(h: &H) {
    let bus = connect(h).await;
    let (a, b) = (topic(), topic());
    let mut sub_a = subscribe(&bus, &a, SubscribeOptions::group("g")).await;
    let mut sub_b = subscribe(&bus, &b, SubscribeOptions::group("g")).await;
    let events: Vec<_> = (0..10).map(event).collect();
    publish_all(&bus, &a, &events).await;
    let got = receive(&mut sub_a, events.len()).await;
    assert_eq!(got.len(), 10);
    expect_nothing(&mut sub_b, Duration::from_millis(300)).await;
}

/// Watermill `TestSubscribeCtx` + resubscribe: a cancelled subscription's group gets all 20
/// events when it subscribes again.
pub async fn subscription_cancel<H: Harness>(h: &H) {
    let bus = connect(h).await;
    let t = topic();
    let sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    drop(sub);
    let events: Vec<_> = (0..20).map(event).collect();
    publish_all(&bus, &t, &events).await;
    let mut again = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let got = receive(&mut again, events.len()).await;
    assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), ids(&events));
}

/// Watermill `TestNewSubscriberReceivesOldMessages`: new groups starting at the earliest event
/// see what was published before them (3 rounds).
pub async fn new_subscriber_receives_old_events<H: Harness>(h: &H) {
    if !h.features().new_subscriber_receives_old_events {
        return skip("new_subscriber_receives_old_events", "no history");
    }
    let bus = connect(h).await;
    let t = topic();
    let events: Vec<_> = (0..20).map(event).collect();
    publish_all(&bus, &t, &events).await;
    for round in 0..3 {
        let options =
            SubscribeOptions::group(format!("late-{round}")).with_start(StartPosition::Earliest);
        let mut sub = subscribe(&bus, &t, options).await;
        let got = receive(&mut sub, events.len()).await;
        assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), ids(&events));
    }
}

/// Watermill `TestReconnect`: the broker restarts twice during publishing; nothing accepted
/// is lost.
pub async fn reconnect_after_broker_restart<H: Harness>(h: &H) {
    if !h.features().broker_restart {
        return skip(
            "reconnect_after_broker_restart",
            "harness cannot restart the broker",
        );
    }
    let n = size(300, 10_000);
    let publishers = size(10, 100);
    let t = topic();
    let sub_bus = connect(h).await;
    let mut sub = subscribe(&sub_bus, &t, SubscribeOptions::group("g")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            if let Ok(d) = item {
                let id = d.envelope().id().to_owned();
                if d.ack().await.is_ok() && tx.send(id).is_err() {
                    break;
                }
            }
        }
    });
    let events: Vec<_> = (0..n).map(event).collect();
    let published = Arc::new(AtomicUsize::new(0));
    let mut jobs = Vec::new();
    for chunk in events.chunks(n.div_ceil(publishers)) {
        let bus = connect(h).await;
        let chunk = chunk.to_vec();
        let t = t.clone();
        let published = Arc::clone(&published);
        jobs.push(tokio::spawn(async move {
            for e in chunk {
                let deadline = Instant::now() + patience();
                while let Err(error) = bus.publish(&t, e.clone()).await {
                    assert!(Instant::now() < deadline, "publish kept failing: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                published.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for threshold in [n / 3, n / 2] {
        while published.load(Ordering::Relaxed) < threshold {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.restart_broker().await.expect("restart broker");
    }
    for job in jobs {
        job.await.expect("publisher task");
    }
    let mut got = HashSet::new();
    let deadline = tokio::time::Instant::now() + patience();
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(id)) => {
                got.insert(id);
            }
            _ => panic!("only {} of {n} events arrived", got.len()),
        }
    }
    consumer.abort();
}

/// Watermill `TestConsumerGroups`: every group gets every event; members of a group share.
pub async fn consumer_groups<H: Harness>(h: &H) {
    if !h.features().consumer_groups {
        return skip("consumer_groups", "no consumer groups");
    }
    let bus = connect(h).await;
    let t = topic();
    let sub_a1 = subscribe(&bus, &t, SubscribeOptions::group("a")).await;
    let sub_a2 = subscribe(&connect(h).await, &t, SubscribeOptions::group("a")).await;
    let mut sub_b = subscribe(&bus, &t, SubscribeOptions::group("b")).await;
    let events: Vec<_> = (0..50).map(event).collect();
    publish_all(&bus, &t, &events).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut members = Vec::new();
    for (member, mut sub) in [(1, sub_a1), (2, sub_a2)] {
        let tx = tx.clone();
        members.push(tokio::spawn(async move {
            while let Some(Ok(d)) = sub.next().await {
                let id = d.envelope().id().to_owned();
                d.ack().await.expect("ack");
                if tx.send((member, id)).is_err() {
                    break;
                }
            }
        }));
    }
    let got_b = receive(&mut sub_b, events.len()).await;
    assert_eq!(got_b.keys().cloned().collect::<HashSet<_>>(), ids(&events));
    let mut got_a = HashSet::new();
    let deadline = tokio::time::Instant::now() + patience();
    while got_a.len() < events.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, id))) => {
                got_a.insert(id);
            }
            _ => panic!("group a got only {} of 50", got_a.len()),
        }
    }
    assert_eq!(got_a, ids(&events));
    members.iter().for_each(tokio::task::JoinHandle::abort);
}

/// `nack(delay)` holds the event back for at least the delay, without blocking other events.
pub async fn delayed_nack<H: Harness>(h: &H) {
    let f = h.features();
    if !f.delayed_nack {
        return skip("delayed_nack", "no delayed nack");
    }
    let delay = Duration::from_millis(800);
    let bus = connect(h).await;
    let t = topic();
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let late = event(1);
    bus.publish(&t, late.clone()).await.expect("publish");
    let d = next(&mut sub).await;
    let nacked_at = Instant::now();
    d.nack(delay).await.expect("nack");
    if !f.guaranteed_order {
        let other = event(2);
        bus.publish(&t, other.clone()).await.expect("publish");
        let d = next(&mut sub).await;
        assert_eq!(
            d.envelope().id(),
            other.id(),
            "a delayed event must not block others"
        );
        d.ack().await.expect("ack");
    }
    let again = next(&mut sub).await;
    let waited = nacked_at.elapsed();
    assert_eq!(again.envelope().id(), late.id());
    assert!(
        waited >= delay.mul_f64(0.9),
        "redelivered after {waited:?}, before the {delay:?} delay"
    );
    again.ack().await.expect("ack");
}

/// After N attempts the consumer dead-letters the event; it arrives on the dead-letter topic
/// with the reason, the original topic, the group and the attempt count.
pub async fn dead_letter_after_attempts<H: Harness>(h: &H) {
    if !h.features().dead_letter {
        return skip("dead_letter_after_attempts", "no dead-letter support");
    }
    let bus = connect(h).await;
    let t = topic();
    let dlq = format!("{t}.dlq");
    let mut dead = subscribe(&bus, &dlq, SubscribeOptions::group("ops")).await;
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let e = event(7);
    bus.publish(&t, e.clone()).await.expect("publish");
    for attempt in 1..=3 {
        let d = next(&mut sub).await;
        assert_eq!(d.attempt(), attempt);
        if attempt < 3 {
            d.nack(Duration::ZERO).await.expect("nack");
        } else {
            d.dead_letter(DeadLetter::new("price missing\nafter 3 attempts"))
                .await
                .expect("dead letter");
        }
    }
    let d = next(&mut dead).await;
    let env = d.envelope();
    assert_eq!(env.id(), e.id());
    assert_eq!(env.data(), e.data());
    assert_eq!(
        env.header(dead_letter_headers::REASON),
        Some("price missing after 3 attempts")
    );
    assert_eq!(
        env.header(dead_letter_headers::ORIGINAL_TOPIC),
        Some(t.as_str())
    );
    assert_eq!(env.header(dead_letter_headers::GROUP), Some("g"));
    assert_eq!(env.header(dead_letter_headers::ATTEMPTS), Some("3"));
    d.ack().await.expect("ack");
    expect_nothing(&mut sub, Duration::from_millis(300)).await;
}

/// Every attribute, extension, header and the trace context arrive unchanged.
pub async fn headers_and_trace_context<H: Harness>(h: &H) {
    let bus = connect(h).await;
    let t = topic();
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let mut md = Metadata::new_root()
        .with_causation_id("cmd-1")
        .with_tenant_id("acme");
    md.tracestate = Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".to_owned());
    let e = Envelope::builder(SOURCE, TYPE)
        .subject("order/42")
        .data_schema("https://example.com/order.v1.json")
        .extension("sequence", "42")
        .partition_key("customer-7")
        .header("x-unicode", "grüße, 世界")
        .header("x-empty", "")
        .metadata(&md)
        .data("application/octet-stream", vec![0u8, 1, 2, 255])
        .build()
        .expect("valid event");
    bus.publish(&t, e.clone()).await.expect("publish");
    let d = next(&mut sub).await;
    assert_eq!(d.envelope(), &e);
    assert_eq!(d.envelope().metadata(), md);
    d.ack().await.expect("ack");
}

/// `publish_batch` delivers every event (in order, where the backend orders).
pub async fn batch_publish<H: Harness>(h: &H) {
    let n = size(50, 1_000);
    let bus = connect(h).await;
    let t = topic();
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let events: Vec<_> = (0..n).map(event).collect();
    bus.publish_batch(&t, events.clone())
        .await
        .expect("publish batch");
    let mut order = Vec::new();
    let mut got = HashSet::new();
    while got.len() < n {
        let d = next(&mut sub).await;
        if got.insert(d.envelope().id().to_owned()) {
            order.push(header_num(d.envelope(), "x-n"));
        }
        d.ack().await.expect("ack");
    }
    assert_eq!(got, ids(&events));
    let f = h.features();
    if f.guaranteed_order || f.guaranteed_order_with_single_subscriber {
        assert_eq!(
            order,
            (0..n).collect::<Vec<_>>(),
            "batch arrived out of order"
        );
    }
}

/// Four competing consumers that take their time still see each key in order.
pub async fn per_key_order_with_concurrency<H: Harness>(h: &H) {
    if !h.features().per_key_order {
        return skip("per_key_order_with_concurrency", "no per-key order");
    }
    let n = size(200, 2_000);
    let keys = 8;
    let t = topic();
    let seen: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let bus = connect(h).await;
        let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
        let seen = Arc::clone(&seen);
        let tx = tx.clone();
        consumers.push(tokio::spawn(async move {
            let _bus = bus;
            while let Some(Ok(d)) = sub.next().await {
                let env = d.envelope();
                seen.lock()
                    .expect("lock")
                    .entry(env.partition_key().unwrap_or_default().to_owned())
                    .or_default()
                    .push(header_num(env, "x-seq"));
                let id = env.id().to_owned();
                tokio::time::sleep(Duration::from_micros(fastrand::u64(0..2_000))).await;
                d.ack().await.expect("ack");
                if tx.send(id).is_err() {
                    break;
                }
            }
        }));
    }
    let bus = connect(h).await;
    let events: Vec<_> = (0..n).map(|i| keyed(i, i % keys, i / keys)).collect();
    publish_all(&bus, &t, &events).await;
    let mut got = HashSet::new();
    let deadline = tokio::time::Instant::now() + patience();
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(id)) => {
                got.insert(id);
            }
            _ => panic!("only {} of {n} events arrived", got.len()),
        }
    }
    consumers.iter().for_each(tokio::task::JoinHandle::abort);
    assert_ordered(&seen.lock().expect("lock"));
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Ping {
    n: usize,
}

impl Event for Ping {
    const TYPE: &'static str = "archon.conformance.ping.v1";
}

/// A router shutting down stops fetching, lets running handlers finish, and nacks the rest:
/// a later consumer gets every event not handled, none is lost.
pub async fn graceful_shutdown_drains<H: Harness>(h: &H) {
    let n = 12;
    let bus = connect(h).await;
    let t = topic();
    let started: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let finished: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = {
        let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
        move |_ctx: EventContext, ping: Ping| {
            let (started, finished, tx) = (Arc::clone(&started), Arc::clone(&finished), tx.clone());
            async move {
                started.lock().expect("lock").insert(ping.n);
                let _ = tx.send(());
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.lock().expect("lock").insert(ping.n);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let router = Router::new(Arc::clone(&bus))
        .shutdown_timeout(Duration::from_secs(10))
        .route(Route::new(t.clone(), "g").concurrency(2), handler)
        .start()
        .await
        .expect("router starts");
    for i in 0..n {
        let e = Envelope::event(SOURCE, &Ping { n: i }, &JsonCodec)
            .expect("encode")
            .build()
            .expect("valid");
        bus.publish(&t, e).await.expect("publish");
    }
    tokio::time::timeout(patience(), rx.recv())
        .await
        .expect("a handler starts");
    let report = router.shutdown().await;
    let started = started.lock().expect("lock").clone();
    let finished = finished.lock().expect("lock").clone();
    assert_eq!(report.aborted, 0);
    assert_eq!(
        started, finished,
        "in-flight handlers finish before shutdown returns"
    );
    assert_eq!(report.handled as usize, finished.len());
    assert!(finished.len() < n, "shutdown stopped fetching");
    let mut sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let rest = receive(&mut sub, n - finished.len()).await;
    let mut all: HashSet<usize> = rest
        .values()
        .map(|e| serde_json::from_slice::<Ping>(e.data()).expect("ping").n)
        .collect();
    assert!(
        all.is_disjoint(&finished),
        "handled events must not come back"
    );
    all.extend(finished);
    assert_eq!(all, (0..n).collect::<HashSet<_>>(), "nothing lost");
}

/// A payload that does not decode, and an unknown event type, reach a typed handler's
/// dead-letter topic with the decode error as the reason; the handler never sees them.
pub async fn malformed_payload_is_dead_lettered<H: Harness>(h: &H) {
    if !h.features().dead_letter {
        return skip(
            "malformed_payload_is_dead_lettered",
            "no dead-letter support",
        );
    }
    let bus = connect(h).await;
    let t = topic();
    let mut dead = subscribe(&bus, &format!("{t}.dlq"), SubscribeOptions::group("ops")).await;
    let handled: Arc<Mutex<Vec<usize>>> = Arc::default();
    let handler = {
        let handled = Arc::clone(&handled);
        move |_ctx: EventContext, ping: Ping| {
            let handled = Arc::clone(&handled);
            async move {
                handled.lock().expect("lock").push(ping.n);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let router = Router::new(Arc::clone(&bus))
        .route(Route::new(t.clone(), "g").name("pinger"), handler)
        .start()
        .await
        .expect("router starts");
    let bad_payload = Envelope::builder(SOURCE, Ping::TYPE)
        .data("application/json", "{not json")
        .build()
        .expect("valid envelope");
    let unknown_type = Envelope::builder(SOURCE, "archon.conformance.unknown.v1")
        .data("application/json", r#"{"n":3}"#)
        .build()
        .expect("valid envelope");
    let good = Envelope::event(SOURCE, &Ping { n: 1 }, &JsonCodec)
        .expect("encode")
        .build()
        .expect("valid");
    publish_all(&bus, &t, &[bad_payload.clone(), unknown_type.clone(), good]).await;
    let got = receive(&mut dead, 2).await;
    let reason = |e: &Envelope| {
        got[e.id()]
            .header(dead_letter_headers::REASON)
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        reason(&bad_payload).starts_with("decode"),
        "{}",
        reason(&bad_payload)
    );
    assert!(
        reason(&unknown_type).contains("unexpected event type"),
        "{}",
        reason(&unknown_type)
    );
    assert_eq!(
        got[bad_payload.id()].header(dead_letter_headers::HANDLER),
        Some("pinger")
    );
    let deadline = Instant::now() + patience();
    while handled.lock().expect("lock").is_empty() {
        assert!(Instant::now() < deadline, "the good event was not handled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    router.shutdown().await;
    assert_eq!(*handled.lock().expect("lock"), vec![1]);
}

/// An event over the default size limit (1 MiB) is refused at publish with a typed error.
pub async fn oversized_event_is_rejected<H: Harness>(h: &H) {
    let bus = connect(h).await;
    let t = topic();
    let _sub = subscribe(&bus, &t, SubscribeOptions::group("g")).await;
    let big = Envelope::builder(SOURCE, TYPE)
        .data(
            "application/octet-stream",
            vec![1u8; crate::envelope::DEFAULT_MAX_EVENT_SIZE + 1],
        )
        .build()
        .expect("valid envelope");
    match bus.publish(&t, big).await {
        Err(Error::TooLarge { size, limit }) => assert!(size > limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
