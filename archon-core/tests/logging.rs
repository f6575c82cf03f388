//! Logging: every line is JSON with the service fields, and the context ids inside a span.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use archon_core::ServiceInfo;
use archon_core::config::{LogConfig, LogFormat};
use archon_core::context::Metadata;
use archon_core::logging;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn capture(format: LogFormat, body: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let service = ServiceInfo::new("orders", "1.2.3").with_instance_id("pod-7");
    let config = LogConfig {
        format,
        filter: "info".into(),
    };
    let subscriber = tracing_subscriber::registry()
        .with(logging::filter(&config).unwrap())
        .with(logging::layer(&service, &config, move || writer.clone()));
    tracing::subscriber::with_default(subscriber, body);
    captured.text()
}

#[test]
fn every_line_is_json_with_service_fields() {
    let text = capture(LogFormat::Json, || {
        tracing::info!(order_id = 42, paid = true, "order placed");
        tracing::warn!(reason = "card declined", "payment failed");
        tracing::debug!("filtered out at info");
    });
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert_eq!(line["service"], "orders");
        assert_eq!(line["version"], "1.2.3");
        assert_eq!(line["instance"], "pod-7");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(line.get("trace_id").is_none(), "no trace outside a span");
    }
    assert_eq!(lines[0]["message"], "order placed");
    assert_eq!(lines[0]["level"], "INFO");
    assert_eq!(lines[0]["fields"]["order_id"], 42);
    assert_eq!(lines[0]["fields"]["paid"], true);
    assert_eq!(lines[1]["fields"]["reason"], "card declined");
}

#[test]
fn lines_inside_a_context_span_carry_trace_span_and_correlation_ids() {
    let md = Metadata::new_root().with_tenant_id("acme");
    let text = capture(LogFormat::Json, || {
        let outer = md.span();
        let _outer = outer.enter();
        let inner = tracing::info_span!("handle", step = 1);
        let _inner = inner.enter();
        tracing::info!("inside");
    });
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["trace_id"].as_str(), md.trace_id().as_deref());
    assert_eq!(line["span_id"].as_str(), md.span_id().as_deref());
    assert_eq!(
        line["correlation_id"].as_str(),
        md.correlation_id.as_deref()
    );
    assert_eq!(line["tenant_id"], "acme");
    assert_eq!(line["span"], "handle");
}

#[test]
fn fields_recorded_later_on_a_span_are_picked_up() {
    let text = capture(LogFormat::Json, || {
        let span = tracing::info_span!("request", correlation_id = tracing::field::Empty);
        let _guard = span.enter();
        span.record("correlation_id", "late-1");
        tracing::info!("after record");
    });
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["correlation_id"], "late-1");
}

#[test]
fn human_format_is_one_readable_line() {
    let text = capture(LogFormat::Human, || {
        tracing::info!(order_id = 7, "order placed");
    });
    let line = text.lines().next().unwrap();
    assert!(
        line.contains("INFO") && line.contains("order placed"),
        "{line}"
    );
    assert!(
        line.contains("order_id=7") && line.contains("service=orders@1.2.3"),
        "{line}"
    );
    assert!(serde_json::from_str::<serde_json::Value>(line).is_err());
}

#[test]
fn invalid_filter_is_a_config_error_naming_the_key() {
    // RUST_LOG is not set by the test runner; if a developer sets it, it wins by design.
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    let config = LogConfig {
        format: LogFormat::Json,
        filter: "info,[[[".into(),
    };
    match logging::filter(&config) {
        Err(archon_core::Error::Config(err)) => assert_eq!(err.key(), Some("log.filter")),
        other => panic!("expected a config error, got {other:?}"),
    }
}
