//! Every metric name and attribute key Archon emits, in one place.
//!
//! Names follow the [OpenTelemetry semantic conventions]: HTTP (stable), RPC (release candidate)
//! and messaging (development). RPC and messaging are still being renamed upstream, so nothing
//! else in Archon spells these strings: when a convention moves, this module changes and
//! everything follows.
//!
//! Instruments are recorded through the [`metrics`] facade under their OpenTelemetry names
//! (`http.server.request.duration`); the Prometheus exporter set up by
//! [`install`](crate::install) maps them to Prometheus names the way the OpenTelemetry
//! specification does: dots become underscores, the unit is appended (`_seconds`) and counters
//! end in `_total`. [`Instrument::prometheus`] spells out the result, and a test scrapes a real
//! exposition to check it. Attribute keys map the same way (`http.request.method` becomes the
//! label `http_request_method`).
//!
//! ```
//! use archon_metrics::names;
//! assert_eq!(names::HTTP_SERVER_REQUEST_DURATION.name, "http.server.request.duration");
//! assert_eq!(
//!     names::HTTP_SERVER_REQUEST_DURATION.prometheus,
//!     "http_server_request_duration_seconds"
//! );
//! assert_eq!(names::attr::HTTP_REQUEST_METHOD, "http.request.method");
//! assert!(names::ALL.iter().any(|i| i.name == "messaging.process.duration"));
//! ```
//!
//! [OpenTelemetry semantic conventions]: https://opentelemetry.io/docs/specs/semconv/

use metrics::Unit;

/// Attribute (label) keys.
pub mod attr {
    // --- HTTP (stable) ---
    /// HTTP method; methods outside the standard set become [`OTHER`](super::value::OTHER).
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// HTTP response status code, as an integer.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// The matched route template (`/users/{id}`), never the raw path.
    pub const HTTP_ROUTE: &str = "http.route";
    /// The class of error: a status code (`500`), a gRPC code name, or `_OTHER`.
    pub const ERROR_TYPE: &str = "error.type";
    /// The peer's host name or address (client side).
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The peer's port (client side).
    pub const SERVER_PORT: &str = "server.port";
    /// `http` or `https`.
    pub const URL_SCHEME: &str = "url.scheme";
    /// The full request URL (client spans only, never a metric label).
    pub const URL_FULL: &str = "url.full";
    /// The request path (server spans only, never a metric label).
    pub const URL_PATH: &str = "url.path";

    // --- RPC (release candidate) ---
    /// The RPC system: [`GRPC`](super::value::GRPC).
    pub const RPC_SYSTEM_NAME: &str = "rpc.system.name";
    /// The fully qualified method: `package.Service/Method`.
    pub const RPC_METHOD: &str = "rpc.method";
    /// The gRPC status as its code name (`OK`, `UNAVAILABLE`). Semantic conventions v1.44 call it
    /// `rpc.response.status_code`; later drafts rename it `rpc.status_code`.
    pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";

    // --- Messaging (development) ---
    /// The messaging system: see [`value::messaging_system`](super::value::messaging_system).
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// The topic, subject, stream or queue.
    pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
    /// The consumer group (subscription, durable consumer, queue group).
    pub const MESSAGING_CONSUMER_GROUP_NAME: &str = "messaging.consumer.group.name";
    /// The system-specific operation name (`publish`, `process`, `ack`).
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    /// `send`, `receive`, `process` or `settle`: see [`value::operation_type`](super::value::operation_type).
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// The message id (spans only, never a metric label).
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";

    // --- Archon's own ---
    /// The name of a circuit breaker, bulkhead, retry policy or outbox.
    pub const ARCHON_POLICY_NAME: &str = "archon.policy.name";
    /// A circuit breaker state: `closed`, `open`, `half_open`, `disabled`, `forced_open`, `metrics_only`.
    pub const ARCHON_CIRCUIT_BREAKER_STATE: &str = "archon.circuit_breaker.state";
    /// The state a circuit breaker left.
    pub const ARCHON_CIRCUIT_BREAKER_FROM_STATE: &str = "archon.circuit_breaker.from_state";
    /// The state a circuit breaker entered.
    pub const ARCHON_CIRCUIT_BREAKER_TO_STATE: &str = "archon.circuit_breaker.to_state";
    /// Outcome of a call through a breaker: `success`, `failure`, `slow`, `ignored`.
    pub const ARCHON_CIRCUIT_BREAKER_OUTCOME: &str = "archon.circuit_breaker.outcome";
    /// Why a retry attempt ended the way it did: `retried`, `exhausted`, `succeeded`.
    pub const ARCHON_RETRY_OUTCOME: &str = "archon.retry.outcome";
    /// The saga's type name.
    pub const ARCHON_SAGA_NAME: &str = "archon.saga.name";
    /// One saga execution's id (spans only, never a metric label).
    pub const ARCHON_SAGA_ID: &str = "archon.saga.id";
    /// The step's name.
    pub const ARCHON_SAGA_STEP_NAME: &str = "archon.saga.step.name";
    /// `completed`, `compensated`, `failed` (saga) or `succeeded`, `failed`, `compensated` (step).
    pub const ARCHON_SAGA_OUTCOME: &str = "archon.saga.outcome";

    // --- Common labels (set once by `install`) ---
    /// The service's name (Prometheus label form of `service.name`).
    pub const SERVICE_NAME: &str = "service_name";
    /// The service's version (`service.version`).
    pub const SERVICE_VERSION: &str = "service_version";
    /// The instance id (`service.instance.id`).
    pub const SERVICE_INSTANCE_ID: &str = "service_instance_id";
}

/// Well-known attribute values.
pub mod value {
    /// What an out-of-set method or an unclassifiable error becomes.
    pub const OTHER: &str = "_OTHER";
    /// `rpc.system.name` for gRPC.
    pub const GRPC: &str = "grpc";

    /// `messaging.system` values. NATS and Redis have no registered value: Archon uses `nats` and
    /// `redis`.
    pub mod messaging_system {
        /// NATS / JetStream.
        pub const NATS: &str = "nats";
        /// Redis Streams.
        pub const REDIS: &str = "redis";
        /// RabbitMQ (AMQP 0-9-1).
        pub const RABBITMQ: &str = "rabbitmq";
        /// Apache Kafka.
        pub const KAFKA: &str = "kafka";
        /// PostgreSQL used as a log or queue.
        pub const POSTGRESQL: &str = "postgresql";
        /// Archon's in-memory bus.
        pub const MEMORY: &str = "memory";
    }

    /// `messaging.operation.type` values.
    pub mod operation_type {
        /// A message is sent (published).
        pub const SEND: &str = "send";
        /// A message is pulled from the broker.
        pub const RECEIVE: &str = "receive";
        /// A message is handled by a consumer.
        pub const PROCESS: &str = "process";
        /// A message is acknowledged, rejected or re-queued.
        pub const SETTLE: &str = "settle";
    }
}

/// What kind of instrument a name is recorded with.
///
/// ```
/// use archon_metrics::names::{self, InstrumentKind};
/// assert_eq!(names::MESSAGING_CLIENT_SENT_MESSAGES.kind, InstrumentKind::Counter);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstrumentKind {
    /// A monotonic counter (`_total` in Prometheus).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution (durations, in seconds).
    Histogram,
}

/// One instrument: its OpenTelemetry name, its Prometheus name, kind, unit and description.
///
/// ```
/// let i = archon_metrics::names::RPC_SERVER_CALL_DURATION;
/// assert_eq!((i.name, i.prometheus), ("rpc.server.call.duration", "rpc_server_call_duration_seconds"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Instrument {
    /// The name recorded through the `metrics` facade (the OpenTelemetry name).
    pub name: &'static str,
    /// The name in a Prometheus exposition.
    pub prometheus: &'static str,
    /// Counter, gauge or histogram.
    pub kind: InstrumentKind,
    /// The unit (seconds for durations).
    pub unit: Unit,
    /// The `# HELP` text.
    pub description: &'static str,
    /// The attribute keys it is recorded with (besides the common service labels); optional ones
    /// (like `error.type`) are listed too.
    pub attributes: &'static [&'static str],
}

macro_rules! instrument {
    ($(#[$doc:meta])* $ident:ident, $name:literal, $prom:literal, $kind:ident, $unit:ident, $desc:literal, [$($attr:expr),* $(,)?]) => {
        $(#[$doc])*
        pub const $ident: Instrument = Instrument {
            name: $name,
            prometheus: $prom,
            kind: InstrumentKind::$kind,
            unit: Unit::$unit,
            description: $desc,
            attributes: &[$($attr),*],
        };
    };
}

use attr::*;

instrument!(
    /// Duration of inbound HTTP requests.
    HTTP_SERVER_REQUEST_DURATION, "http.server.request.duration", "http_server_request_duration_seconds",
    Histogram, Seconds, "Duration of HTTP server requests.",
    [HTTP_REQUEST_METHOD, HTTP_ROUTE, HTTP_RESPONSE_STATUS_CODE, URL_SCHEME, ERROR_TYPE]
);
instrument!(
    /// Duration of outbound HTTP requests.
    HTTP_CLIENT_REQUEST_DURATION, "http.client.request.duration", "http_client_request_duration_seconds",
    Histogram, Seconds, "Duration of HTTP client requests.",
    [HTTP_REQUEST_METHOD, SERVER_ADDRESS, SERVER_PORT, HTTP_RESPONSE_STATUS_CODE, URL_SCHEME, ERROR_TYPE]
);
instrument!(
    /// Duration of inbound RPCs.
    RPC_SERVER_CALL_DURATION, "rpc.server.call.duration", "rpc_server_call_duration_seconds",
    Histogram, Seconds, "Duration of RPCs handled by this server.",
    [RPC_SYSTEM_NAME, RPC_METHOD, RPC_RESPONSE_STATUS_CODE, ERROR_TYPE]
);
instrument!(
    /// Duration of outbound RPCs.
    RPC_CLIENT_CALL_DURATION, "rpc.client.call.duration", "rpc_client_call_duration_seconds",
    Histogram, Seconds, "Duration of RPCs made by this client.",
    [RPC_SYSTEM_NAME, RPC_METHOD, SERVER_ADDRESS, SERVER_PORT, RPC_RESPONSE_STATUS_CODE, ERROR_TYPE]
);
instrument!(
    /// Messages a producer sent.
    MESSAGING_CLIENT_SENT_MESSAGES, "messaging.client.sent.messages", "messaging_client_sent_messages_total",
    Counter, Count, "Messages sent by producers.",
    [MESSAGING_SYSTEM, MESSAGING_DESTINATION_NAME, MESSAGING_OPERATION_NAME, ERROR_TYPE]
);
instrument!(
    /// Messages a consumer received.
    MESSAGING_CLIENT_CONSUMED_MESSAGES, "messaging.client.consumed.messages", "messaging_client_consumed_messages_total",
    Counter, Count, "Messages delivered to consumers.",
    [MESSAGING_SYSTEM, MESSAGING_DESTINATION_NAME, MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_OPERATION_NAME, ERROR_TYPE]
);
instrument!(
    /// Duration of a client operation against the broker (publish, receive, ack).
    MESSAGING_CLIENT_OPERATION_DURATION, "messaging.client.operation.duration", "messaging_client_operation_duration_seconds",
    Histogram, Seconds, "Duration of messaging client operations.",
    [MESSAGING_SYSTEM, MESSAGING_DESTINATION_NAME, MESSAGING_OPERATION_NAME, MESSAGING_OPERATION_TYPE, ERROR_TYPE]
);
instrument!(
    /// Duration of handling one message.
    MESSAGING_PROCESS_DURATION, "messaging.process.duration", "messaging_process_duration_seconds",
    Histogram, Seconds, "Duration of processing one message.",
    [MESSAGING_SYSTEM, MESSAGING_DESTINATION_NAME, MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_OPERATION_NAME, ERROR_TYPE]
);
instrument!(
    /// 1 for the breaker's current state, 0 for the others.
    ARCHON_CIRCUIT_BREAKER_STATE_GAUGE, "archon.circuit_breaker.state", "archon_circuit_breaker_state",
    Gauge, Count, "Circuit breaker state: 1 for the current state, 0 otherwise.",
    [ARCHON_POLICY_NAME, ARCHON_CIRCUIT_BREAKER_STATE]
);
instrument!(
    /// State transitions of a circuit breaker.
    ARCHON_CIRCUIT_BREAKER_TRANSITIONS, "archon.circuit_breaker.transitions", "archon_circuit_breaker_transitions_total",
    Counter, Count, "Circuit breaker state transitions.",
    [ARCHON_POLICY_NAME, ARCHON_CIRCUIT_BREAKER_FROM_STATE, ARCHON_CIRCUIT_BREAKER_TO_STATE]
);
instrument!(
    /// Calls a circuit breaker rejected without trying.
    ARCHON_CIRCUIT_BREAKER_REJECTED_CALLS, "archon.circuit_breaker.rejected.calls", "archon_circuit_breaker_rejected_calls_total",
    Counter, Count, "Calls rejected by an open circuit breaker.",
    [ARCHON_POLICY_NAME]
);
instrument!(
    /// Bulkhead permits in use.
    ARCHON_BULKHEAD_PERMITS_IN_USE, "archon.bulkhead.permits.in_use", "archon_bulkhead_permits_in_use",
    Gauge, Count, "Bulkhead permits currently held.",
    [ARCHON_POLICY_NAME]
);
instrument!(
    /// The bulkhead's permit limit.
    ARCHON_BULKHEAD_PERMITS_LIMIT, "archon.bulkhead.permits.limit", "archon_bulkhead_permits_limit",
    Gauge, Count, "Bulkhead permit limit.",
    [ARCHON_POLICY_NAME]
);
instrument!(
    /// Calls a bulkhead rejected (no permit in time).
    ARCHON_BULKHEAD_REJECTED_CALLS, "archon.bulkhead.rejected.calls", "archon_bulkhead_rejected_calls_total",
    Counter, Count, "Calls rejected by a full bulkhead.",
    [ARCHON_POLICY_NAME]
);
instrument!(
    /// Retry attempts (not counting first attempts).
    ARCHON_RETRY_ATTEMPTS, "archon.retry.attempts", "archon_retry_attempts_total",
    Counter, Count, "Retry attempts made, beyond the first attempt.",
    [ARCHON_POLICY_NAME, ARCHON_RETRY_OUTCOME]
);
instrument!(
    /// Retries the retry budget refused.
    ARCHON_RETRY_BUDGET_REJECTIONS, "archon.retry.budget.rejections", "archon_retry_budget_rejections_total",
    Counter, Count, "Retries refused because the retry budget was spent.",
    [ARCHON_POLICY_NAME]
);
instrument!(
    /// Calls through a circuit breaker, by outcome.
    ARCHON_CIRCUIT_BREAKER_CALLS, "archon.circuit_breaker.calls", "archon_circuit_breaker_calls_total",
    Counter, Count, "Calls through a circuit breaker, by outcome.",
    [ARCHON_POLICY_NAME, ARCHON_CIRCUIT_BREAKER_OUTCOME]
);
instrument!(
    /// Hedged requests sent.
    ARCHON_HEDGE_ATTEMPTS, "archon.hedge.attempts", "archon_hedge_attempts_total",
    Counter, Count, "Hedged (second) requests sent.",
    [ARCHON_POLICY_NAME]
);
instrument!(
    /// Sagas started.
    ARCHON_SAGA_STARTED, "archon.saga.started", "archon_saga_started_total",
    Counter, Count, "Sagas started.",
    [ARCHON_SAGA_NAME]
);
instrument!(
    /// Step attempts scheduled for a retry after a transient failure.
    ARCHON_SAGA_STEP_RETRIES, "archon.saga.step.retries", "archon_saga_step_retries_total",
    Counter, Count, "Saga step retries scheduled after a transient failure.",
    [ARCHON_SAGA_NAME, ARCHON_SAGA_STEP_NAME]
);
instrument!(
    /// Finished sagas by outcome.
    ARCHON_SAGA_EXECUTIONS, "archon.saga.executions", "archon_saga_executions_total",
    Counter, Count, "Sagas finished, by outcome.",
    [ARCHON_SAGA_NAME, ARCHON_SAGA_OUTCOME]
);
instrument!(
    /// Duration of a whole saga.
    ARCHON_SAGA_DURATION, "archon.saga.duration", "archon_saga_duration_seconds",
    Histogram, Seconds, "Duration of sagas from start to completion or compensation.",
    [ARCHON_SAGA_NAME, ARCHON_SAGA_OUTCOME]
);
instrument!(
    /// Duration of one saga step (or its compensation).
    ARCHON_SAGA_STEP_DURATION, "archon.saga.step.duration", "archon_saga_step_duration_seconds",
    Histogram, Seconds, "Duration of saga steps and compensations.",
    [ARCHON_SAGA_NAME, ARCHON_SAGA_STEP_NAME, ARCHON_SAGA_OUTCOME]
);
instrument!(
    /// Age of the oldest unpublished outbox entry.
    ARCHON_OUTBOX_LAG, "archon.outbox.lag", "archon_outbox_lag_seconds",
    Gauge, Seconds, "Age of the oldest outbox entry not yet published.",
    [ARCHON_POLICY_NAME]
);
instrument!(
    /// Outbox entries waiting to be published.
    ARCHON_OUTBOX_PENDING_MESSAGES, "archon.outbox.pending.messages", "archon_outbox_pending_messages",
    Gauge, Count, "Outbox entries waiting to be published.",
    [ARCHON_POLICY_NAME]
);

/// Every instrument above; [`install`](crate::install) describes them all (unit and help text).
pub const ALL: &[Instrument] = &[
    HTTP_SERVER_REQUEST_DURATION,
    HTTP_CLIENT_REQUEST_DURATION,
    RPC_SERVER_CALL_DURATION,
    RPC_CLIENT_CALL_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_PROCESS_DURATION,
    ARCHON_CIRCUIT_BREAKER_STATE_GAUGE,
    ARCHON_CIRCUIT_BREAKER_TRANSITIONS,
    ARCHON_CIRCUIT_BREAKER_CALLS,
    ARCHON_CIRCUIT_BREAKER_REJECTED_CALLS,
    ARCHON_BULKHEAD_PERMITS_IN_USE,
    ARCHON_BULKHEAD_PERMITS_LIMIT,
    ARCHON_BULKHEAD_REJECTED_CALLS,
    ARCHON_RETRY_ATTEMPTS,
    ARCHON_RETRY_BUDGET_REJECTIONS,
    ARCHON_HEDGE_ATTEMPTS,
    ARCHON_SAGA_STARTED,
    ARCHON_SAGA_EXECUTIONS,
    ARCHON_SAGA_STEP_RETRIES,
    ARCHON_SAGA_DURATION,
    ARCHON_SAGA_STEP_DURATION,
    ARCHON_OUTBOX_LAG,
    ARCHON_OUTBOX_PENDING_MESSAGES,
];

/// Describes every instrument in [`ALL`] (unit and help text) to the installed recorder.
pub(crate) fn describe_all() {
    for i in ALL {
        match i.kind {
            InstrumentKind::Counter => metrics::describe_counter!(i.name, i.unit, i.description),
            InstrumentKind::Gauge => metrics::describe_gauge!(i.name, i.unit, i.description),
            InstrumentKind::Histogram => {
                metrics::describe_histogram!(i.name, i.unit, i.description);
            }
        }
    }
}

/// The Prometheus form of an attribute key (`http.request.method` -> `http_request_method`).
///
/// ```
/// assert_eq!(archon_metrics::names::prometheus_label("rpc.system.name"), "rpc_system_name");
/// ```
pub fn prometheus_label(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
