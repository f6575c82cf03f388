//! The line format: JSON or human text, with service and context fields.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::ServiceInfo;
use crate::config::LogFormat;

/// The span fields copied onto every log line inside the span.
const CONTEXT_FIELDS: [&str; 4] = ["trace_id", "span_id", "correlation_id", "tenant_id"];

/// Context field values recorded on one span.
#[derive(Debug, Default, Clone)]
struct ContextFields([Option<String>; 4]);

impl Visit for ContextFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(i) = CONTEXT_FIELDS.iter().position(|name| *name == field.name()) {
            self.0[i] = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(i) = CONTEXT_FIELDS.iter().position(|name| *name == field.name()) {
            self.0[i] = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

/// Remembers `trace_id`, `span_id`, `correlation_id` and `tenant_id` recorded on spans so that
/// log lines inside them carry the values. Part of [`layer`](super::layer); add it yourself only
/// when you build your own formatting layer.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let subscriber = tracing_subscriber::registry()
///     .with(archon_core::logging::ContextFieldsLayer::default());
/// # drop(subscriber);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct ContextFieldsLayer {
    _private: (),
}

impl<S> Layer<S> for ContextFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = ContextFields::default();
        attrs.record(&mut fields);
        if fields.0.iter().any(Option::is_some)
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<ContextFields>() {
            Some(fields) => values.record(fields),
            None => {
                let mut fields = ContextFields::default();
                values.record(&mut fields);
                if fields.0.iter().any(Option::is_some) {
                    extensions.insert(fields);
                }
            }
        }
    }
}

/// Collects an event's fields as JSON values.
#[derive(Default)]
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

/// Formats events as JSON lines or human text, with the service and context fields.
#[derive(Debug, Clone)]
pub(super) struct ArchonFormat {
    format: LogFormat,
    service: String,
    version: String,
    instance: String,
}

impl ArchonFormat {
    pub(super) fn new(service: &ServiceInfo, format: LogFormat) -> Self {
        Self {
            format,
            service: service.name.clone(),
            version: service.version.clone(),
            instance: service.instance_id.clone(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for ArchonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = match fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };

        // The nearest span that recorded each context field wins.
        let mut context: [Option<String>; 4] = Default::default();
        let mut span_name = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                span_name.get_or_insert_with(|| span.name());
                if let Some(found) = span.extensions().get::<ContextFields>() {
                    for (slot, value) in context.iter_mut().zip(found.0.iter()) {
                        if slot.is_none() {
                            slot.clone_from(value);
                        }
                    }
                }
            }
        }

        let meta = event.metadata();
        let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        match self.format {
            LogFormat::Json => {
                let mut line = Map::new();
                line.insert("timestamp".into(), Value::from(timestamp.to_string()));
                line.insert("level".into(), Value::from(meta.level().as_str()));
                line.insert("target".into(), Value::from(meta.target()));
                line.insert("message".into(), Value::from(message));
                if !fields.is_empty() {
                    line.insert("fields".into(), Value::Object(fields));
                }
                if let Some(name) = span_name {
                    line.insert("span".into(), Value::from(name));
                }
                line.insert("service".into(), Value::from(self.service.as_str()));
                line.insert("version".into(), Value::from(self.version.as_str()));
                line.insert("instance".into(), Value::from(self.instance.as_str()));
                for (name, value) in CONTEXT_FIELDS.iter().zip(context) {
                    if let Some(value) = value {
                        line.insert((*name).to_owned(), Value::from(value));
                    }
                }
                let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
                writeln!(writer, "{text}")
            }
            LogFormat::Human => {
                write!(
                    writer,
                    "{timestamp} {:>5} {}: {message}",
                    meta.level(),
                    meta.target()
                )?;
                for (key, value) in &fields {
                    write!(writer, " {key}={value}")?;
                }
                for (name, value) in CONTEXT_FIELDS.iter().zip(context) {
                    if let Some(value) = value {
                        write!(writer, " {name}={value}")?;
                    }
                }
                writeln!(writer, " service={}@{}", self.service, self.version)
            }
        }
    }
}
