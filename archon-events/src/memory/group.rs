//! One consumer group of a memory topic: ready queue, per-key parking, delayed redelivery,
//! capacity accounting, and the subscription stream that competes for its events.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::MemoryBus;
use crate::bus::{Acker, DeadLetter, Delivery, Subscription};
use crate::{Envelope, Result};

/// Most events a subscription takes from the group under one lock.
const FETCH_BATCH: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct Item {
    env: Arc<Envelope>,
    key: Option<Arc<str>>,
    deliveries: u32,
}

impl Item {
    pub(crate) fn new(env: Arc<Envelope>) -> Self {
        let key = env.partition_key().map(Arc::from);
        Self::with_key(env, key)
    }

    pub(crate) fn with_key(env: Arc<Envelope>, key: Option<Arc<str>>) -> Self {
        Self {
            env,
            key,
            deliveries: 0,
        }
    }
}

#[derive(Debug)]
struct Delayed {
    due: Instant,
    seq: u64,
    item: Item,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    // Reversed: BinaryHeap is a max-heap, we want the earliest due first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Item>,
    /// Events waiting because an earlier event with the same key is not settled yet.
    parked: HashMap<Arc<str>, VecDeque<Item>>,
    /// Keys with an event ready, in flight or delayed.
    busy: HashSet<Arc<str>>,
    delayed: BinaryHeap<Delayed>,
    seq: u64,
    /// Every unsettled event of the group, wherever it is.
    len: usize,
    closed: bool,
}

impl State {
    fn take(&mut self, max: usize, now: Instant) -> Vec<Item> {
        let mut due = Vec::new();
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                due.push(d.item);
            }
        }
        for item in due.into_iter().rev() {
            self.ready.push_front(item);
        }
        let n = max.min(self.ready.len());
        let mut out: Vec<Item> = self.ready.drain(..n).collect();
        for item in &mut out {
            item.deliveries = item.deliveries.saturating_add(1);
        }
        out
    }
}

#[derive(Debug)]
pub(crate) struct Group {
    name: String,
    state: Mutex<State>,
    /// Mirror of `State::len` for lock-free capacity checks.
    len: AtomicUsize,
    readable: Notify,
    writable: Notify,
    /// Fetchers about to wait on `readable`: pushes notify only when there are some.
    readers: AtomicUsize,
    /// Publishers about to wait on `writable`: settlements notify only when there are some.
    writers: AtomicUsize,
}

/// Counts a waiter for as long as it lives (also when its future is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Group {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            state: Mutex::new(State::default()),
            len: AtomicUsize::new(0),
            readable: Notify::new(),
            writable: Notify::new(),
            readers: AtomicUsize::new(0),
            writers: AtomicUsize::new(0),
        }
    }

    fn wake_readers(&self) {
        if self.readers.load(Ordering::SeqCst) > 0 {
            self.readable.notify_waiters();
        }
    }

    fn wake_writers(&self) {
        if self.writers.load(Ordering::SeqCst) > 0 {
            self.writable.notify_waiters();
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }

    pub(crate) fn push(&self, items: impl IntoIterator<Item = Item>) {
        let wake = {
            let mut s = self.lock();
            // Waiting fetchers saw an empty ready queue; if it was not empty they were woken
            // already, so only the first event of a burst needs a wake-up.
            let was_empty = s.ready.is_empty();
            for item in items {
                s.len += 1;
                if let Some(key) = &item.key {
                    if s.busy.contains(key) {
                        s.parked.entry(Arc::clone(key)).or_default().push_back(item);
                        continue;
                    }
                    s.busy.insert(Arc::clone(key));
                }
                s.ready.push_back(item);
            }
            self.len.store(s.len, Ordering::SeqCst);
            was_empty && !s.ready.is_empty()
        };
        if wake {
            self.wake_readers();
        }
    }

    /// Waits until the group holds fewer than `capacity` events; `Err` at the deadline.
    pub(crate) async fn wait_for_room(
        &self,
        capacity: usize,
        deadline: Instant,
    ) -> std::result::Result<(), ()> {
        loop {
            let notified = self.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let _waiting = Waiting::new(&self.writers);
            {
                let s = self.lock();
                if s.len < capacity || s.closed {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(());
            }
        }
    }

    /// Takes up to `max` ready events, waiting for some; `None` once the group is closed.
    async fn fetch(&self, max: usize) -> Option<Vec<Item>> {
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let _waiting = Waiting::new(&self.readers);
            let next_due = {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                let items = s.take(max, Instant::now());
                if !items.is_empty() {
                    return Some(items);
                }
                s.delayed.peek().map(|d| d.due)
            };
            match next_due {
                Some(due) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The event is settled for good (ack or dead-letter): free its slot and its key.
    fn done(&self, item: &Item) {
        let mut woke = false;
        {
            let mut s = self.lock();
            s.len = s.len.saturating_sub(1);
            if let Some(key) = &item.key {
                let next = s.parked.get_mut(key).and_then(VecDeque::pop_front);
                match next {
                    Some(next) => {
                        if s.parked.get(key).is_some_and(VecDeque::is_empty) {
                            s.parked.remove(key);
                        }
                        s.ready.push_back(next);
                        woke = true;
                    }
                    None => {
                        s.busy.remove(key);
                    }
                }
            }
            self.len.store(s.len, Ordering::SeqCst);
        }
        self.wake_writers();
        if woke {
            self.wake_readers();
        }
    }

    /// Puts an event back for redelivery, at once or after `delay`. Its key stays busy, so
    /// later events of the key keep waiting behind it.
    fn requeue(&self, item: Item, delay: Duration) {
        {
            let mut s = self.lock();
            if delay.is_zero() {
                s.ready.push_front(item);
            } else {
                s.seq += 1;
                let seq = s.seq;
                s.delayed.push(Delayed {
                    due: Instant::now() + delay,
                    seq,
                    item,
                });
            }
        }
        self.wake_readers();
    }

    /// Returns events taken but never handed out (their delivery does not count).
    fn give_back(&self, items: impl DoubleEndedIterator<Item = Item>) {
        {
            let mut s = self.lock();
            for mut item in items.rev() {
                item.deliveries = item.deliveries.saturating_sub(1);
                s.ready.push_front(item);
            }
        }
        self.wake_readers();
    }
}

/// What every delivery of one subscription shares.
#[derive(Debug)]
struct Consumer {
    bus: MemoryBus,
    group: Arc<Group>,
    topic: Arc<str>,
    dead_letter_topic: String,
    prefetch: usize,
    outstanding: AtomicUsize,
    settled: Notify,
}

impl Consumer {
    fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) >= self.prefetch {
            self.settled.notify_waiters();
        }
    }
}

#[derive(Debug)]
struct Stream {
    consumer: Arc<Consumer>,
    buffer: VecDeque<Item>,
}

impl Stream {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(item) = self.buffer.pop_front() {
                let attempt = item.deliveries;
                let env = Arc::clone(&item.env);
                let acker = MemoryAcker {
                    consumer: Arc::clone(&self.consumer),
                    item,
                };
                return Some(Delivery::new(
                    Arc::clone(&self.consumer.topic),
                    env,
                    attempt,
                    Box::new(acker),
                ));
            }
            let c = &self.consumer;
            let free = loop {
                let settled = c.settled.notified();
                tokio::pin!(settled);
                settled.as_mut().enable();
                let closed_or_more = c.group.readable.notified();
                tokio::pin!(closed_or_more);
                closed_or_more.as_mut().enable();
                let out = c.outstanding.load(Ordering::Acquire);
                if out < c.prefetch {
                    break c.prefetch - out;
                }
                if c.group.lock().closed {
                    return None;
                }
                tokio::select! {
                    () = &mut settled => {}
                    () = &mut closed_or_more => {}
                }
            };
            let items = c.group.fetch(free.min(FETCH_BATCH)).await?;
            c.outstanding.fetch_add(items.len(), Ordering::AcqRel);
            self.buffer.extend(items);
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let n = self.buffer.len();
        if n > 0 {
            self.consumer.outstanding.fetch_sub(n, Ordering::AcqRel);
            self.consumer.group.give_back(self.buffer.drain(..));
        }
    }
}

pub(crate) fn subscription(
    bus: MemoryBus,
    group: Arc<Group>,
    topic: &str,
    dead_letter_topic: String,
    prefetch: usize,
) -> Subscription {
    let stream = Stream {
        consumer: Arc::new(Consumer {
            bus,
            group,
            topic: Arc::from(topic),
            dead_letter_topic,
            prefetch,
            outstanding: AtomicUsize::new(0),
            settled: Notify::new(),
        }),
        buffer: VecDeque::new(),
    };
    Subscription::new(futures::stream::unfold(stream, |mut stream| async move {
        let delivery = stream.next().await?;
        Some((Ok(delivery), stream))
    }))
}

#[derive(Debug)]
struct MemoryAcker {
    consumer: Arc<Consumer>,
    item: Item,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<()> {
        self.consumer.group.done(&self.item);
        self.consumer.release();
        Ok(())
    }

    async fn nack(&self, delay: Duration) -> Result<()> {
        self.consumer.group.requeue(self.item.clone(), delay);
        self.consumer.release();
        Ok(())
    }

    async fn dead_letter(&self, dead_letter: DeadLetter) -> Result<()> {
        let c = &self.consumer;
        let dead = dead_letter.apply(
            &self.item.env,
            &c.topic,
            c.group.name(),
            self.item.deliveries,
        );
        let published = c
            .bus
            .publish_one(&c.dead_letter_topic, Arc::new(dead))
            .await;
        match published {
            Ok(()) => c.group.done(&self.item),
            Err(_) => c.group.requeue(self.item.clone(), Duration::ZERO),
        }
        c.release();
        published
    }

    fn dropped(&self) {
        self.consumer
            .group
            .requeue(self.item.clone(), Duration::ZERO);
        self.consumer.release();
    }
}
