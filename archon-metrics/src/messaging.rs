//! Messaging metrics and spans for event buses: the hooks archon-events calls.
//!
//! A [`MessagingInstruments`] is made once per (system, destination, consumer group), when a
//! publisher or subscription is created; once a series is registered by its first use, counting
//! a message is one atomic add (no allocation, no lookup). Spans follow the messaging conventions: `send {destination}`
//! (producer) writes its trace context into the event's headers, `process {destination}`
//! (consumer) reads it back, becomes its child and links to it.
//!
//! ```
//! use std::collections::HashMap;
//! use archon_metrics::messaging::MessagingInstruments;
//! use archon_metrics::names::value::messaging_system;
//!
//! // Producer side.
//! let orders = MessagingInstruments::new(messaging_system::NATS, "orders.created");
//! let mut headers: HashMap<String, String> = HashMap::new();
//! let send = orders.send_span(&mut headers);
//! // ... publish with `headers` inside `send` ...
//! orders.record_sent(1);
//!
//! // Consumer side.
//! let billing = MessagingInstruments::new(messaging_system::NATS, "orders.created")
//!     .with_consumer_group("billing");
//! billing.record_consumed(1);
//! let span = billing.process_span(&headers);
//! let timer = billing.start_process();
//! // ... handle the event inside `span` ...
//! timer.success();
//! # drop((send, span));
//! ```

use std::sync::OnceLock;
use std::time::Instant;

use archon_core::context::{Extractor, Injector, Metadata};
use metrics::{Counter, Histogram, Label, SharedString};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::names::{self, attr, value};
use crate::propagation::{self, ContextMetadata};

/// Pre-registered messaging instruments for one destination (and consumer group).
///
/// Each series is registered on first use, with the recorder installed at that moment (install
/// the recorder with [`install`](crate::install) before traffic starts).
///
/// ```
/// let m = archon_metrics::messaging::MessagingInstruments::new("memory", "demo");
/// m.record_sent(3);
/// assert_eq!(m.destination(), "demo");
/// ```
#[derive(Debug, Clone)]
pub struct MessagingInstruments {
    system: &'static str,
    destination: SharedString,
    group: Option<SharedString>,
    // Registered on first use: a producer never shows consumer series, and after that a
    // recording is one atomic load plus the recorder's atomic add.
    sent: OnceLock<Counter>,
    consumed: OnceLock<Counter>,
    process_ok: OnceLock<Histogram>,
}

impl MessagingInstruments {
    /// Instruments for producers (and consumers without a group) of `destination` on `system`
    /// (one of [`crate::names::value::messaging_system`]).
    pub fn new(system: &'static str, destination: impl Into<String>) -> Self {
        Self::build(
            system,
            crate::observe::shared(Into::<String>::into(destination)),
            None,
        )
    }

    /// The same destination, consumed by `group`.
    #[must_use]
    pub fn with_consumer_group(self, group: impl Into<String>) -> Self {
        Self::build(
            self.system,
            self.destination,
            Some(crate::observe::shared(Into::<String>::into(group))),
        )
    }

    fn build(system: &'static str, destination: SharedString, group: Option<SharedString>) -> Self {
        Self {
            system,
            destination,
            group,
            sent: OnceLock::new(),
            consumed: OnceLock::new(),
            process_ok: OnceLock::new(),
        }
    }

    /// The messaging system.
    pub fn system(&self) -> &'static str {
        self.system
    }

    /// The destination name.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// Counts `n` messages sent successfully (`messaging.client.sent.messages`).
    pub fn record_sent(&self, n: u64) {
        self.sent
            .get_or_init(|| {
                metrics::counter!(
                    names::MESSAGING_CLIENT_SENT_MESSAGES.name,
                    self.labels("send")
                )
            })
            .increment(n);
    }

    /// Counts `n` messages whose send failed, with `error.type` (a short, bounded class such as
    /// `timeout` or `_OTHER`; never an error message).
    pub fn record_send_failed(&self, n: u64, error_type: &'static str) {
        let mut labels = self.labels("send");
        labels.push(Label::from_static_parts(attr::ERROR_TYPE, error_type));
        metrics::counter!(names::MESSAGING_CLIENT_SENT_MESSAGES.name, labels).increment(n);
    }

    /// Counts `n` messages delivered to this consumer (`messaging.client.consumed.messages`).
    pub fn record_consumed(&self, n: u64) {
        self.consumed
            .get_or_init(|| {
                metrics::counter!(
                    names::MESSAGING_CLIENT_CONSUMED_MESSAGES.name,
                    self.labels("receive")
                )
            })
            .increment(n);
    }

    /// Starts timing the processing of one message (`messaging.process.duration`).
    pub fn start_process(&self) -> ProcessTimer<'_> {
        ProcessTimer {
            instruments: self,
            start: Instant::now(),
            done: false,
        }
    }

    /// Records one client operation against the broker (`messaging.client.operation.duration`):
    /// `operation` is the system's name for it (`publish`, `ack`, `fetch`), `operation_type` one
    /// of [`crate::names::value::operation_type`].
    pub fn record_operation(
        &self,
        operation: &'static str,
        operation_type: &'static str,
        seconds: f64,
        error_type: Option<&'static str>,
    ) {
        let mut labels = self.labels(operation);
        labels.push(Label::from_static_parts(
            attr::MESSAGING_OPERATION_TYPE,
            operation_type,
        ));
        if let Some(error_type) = error_type {
            labels.push(Label::from_static_parts(attr::ERROR_TYPE, error_type));
        }
        metrics::histogram!(names::MESSAGING_CLIENT_OPERATION_DURATION.name, labels)
            .record(seconds);
    }

    fn labels(&self, operation: &'static str) -> Vec<Label> {
        let mut labels = vec![
            Label::from_static_parts(attr::MESSAGING_SYSTEM, self.system),
            Label::new(attr::MESSAGING_DESTINATION_NAME, self.destination.clone()),
            Label::from_static_parts(attr::MESSAGING_OPERATION_NAME, operation),
        ];
        if operation != "send"
            && let Some(group) = &self.group
        {
            labels.push(Label::new(
                attr::MESSAGING_CONSUMER_GROUP_NAME,
                group.clone(),
            ));
        }
        labels
    }

    /// A producer span `send {destination}` (child of the current span), whose trace context
    /// and the correlation ids in scope are written into `headers`. Publish inside it.
    pub fn send_span<C: Injector + Extractor + ?Sized>(&self, headers: &mut C) -> Span {
        let span = tracing::info_span!(
            target: "archon_metrics::messaging",
            "send",
            otel.name = %format_args!("send {}", self.destination),
            otel.kind = "producer",
            otel.status_code = Empty,
            messaging.system = self.system,
            messaging.destination.name = &*self.destination,
            messaging.operation.name = "send",
            messaging.operation.type = value::operation_type::SEND,
            messaging.message.id = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        crate::otel::record_ids(&span);
        propagation::inject_span(&span, headers);
        span
    }

    /// A consumer span `process {destination}` for a received event: a child of the producer's
    /// context read from `headers`, with a link to it too (so tools that show links see the
    /// hand-off). Without a valid producer context it starts a new trace. Calls made inside it
    /// carry the event's correlation id.
    pub fn process_span<C: Extractor + ?Sized>(&self, headers: &C) -> Span {
        let group = self.group.as_deref();
        let span = tracing::info_span!(
            target: "archon_metrics::messaging",
            "process",
            otel.name = %format_args!("process {}", self.destination),
            otel.kind = "consumer",
            otel.status_code = Empty,
            messaging.system = self.system,
            messaging.destination.name = &*self.destination,
            messaging.consumer.group.name = group,
            messaging.operation.name = "process",
            messaging.operation.type = value::operation_type::PROCESS,
            messaging.message.id = Empty,
            trace_id = Empty,
            span_id = Empty,
            correlation_id = Empty,
        );
        if span.is_disabled() {
            return span;
        }
        let metadata = Metadata::extract(headers);
        let producer = propagation::extract(headers);
        let producer_sc = producer.span().span_context().clone();
        let parent = producer.with_value(ContextMetadata::ids_of(&metadata));
        let _ = span.set_parent(parent);
        if producer_sc.is_valid() {
            span.add_link(producer_sc);
        }
        crate::otel::record_ids(&span);
        if let Some(id) = metadata.correlation_id.as_deref() {
            span.record("correlation_id", id);
        }
        span
    }
}

/// Times the processing of one message; records `messaging.process.duration` on
/// [`success`](Self::success), [`failure`](Self::failure), or drop (as `_OTHER`, a handler that
/// panicked or was cancelled).
///
/// ```
/// let m = archon_metrics::messaging::MessagingInstruments::new("memory", "demo");
/// m.start_process().failure("handler_error");
/// ```
#[derive(Debug)]
pub struct ProcessTimer<'a> {
    instruments: &'a MessagingInstruments,
    start: Instant,
    done: bool,
}

impl ProcessTimer<'_> {
    /// The handler succeeded.
    pub fn success(mut self) {
        self.done = true;
        self.instruments
            .process_ok
            .get_or_init(|| {
                metrics::histogram!(
                    names::MESSAGING_PROCESS_DURATION.name,
                    self.instruments.labels("process")
                )
            })
            .record(self.start.elapsed().as_secs_f64());
    }

    /// The handler failed; `error_type` is a short, bounded class.
    pub fn failure(mut self, error_type: &'static str) {
        self.done = true;
        self.record_error(error_type);
    }

    fn record_error(&self, error_type: &'static str) {
        let mut labels = self.instruments.labels("process");
        labels.push(Label::from_static_parts(attr::ERROR_TYPE, error_type));
        metrics::histogram!(names::MESSAGING_PROCESS_DURATION.name, labels)
            .record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for ProcessTimer<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.record_error(value::OTHER);
        }
    }
}
