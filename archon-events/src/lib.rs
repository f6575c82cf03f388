//! # archon-events
//!
//! **Status: planned.** This crate will hold Archon's event bus:
//!
//! - the `Publisher` / `Subscriber` / `EventBus` contract (publish, subscribe, consumer groups,
//!   ack / nack with delay / dead-letter, in-progress lease extension), written in the trait docs;
//! - a CloudEvents 1.0 envelope with binary and structured mappings per protocol binding;
//! - typed events and codecs (JSON by default, protobuf behind a feature);
//! - an in-memory backend (the embedded default) and a router with retry, poison-queue and
//!   dedupe middleware;
//! - broker backends as cargo features (NATS JetStream, Redis Streams, RabbitMQ, PostgreSQL with
//!   outbox and event store, Kafka), all passing one conformance suite.
//!
//! Nothing is exported yet.
