//! Protocol bindings: binary content mode (attributes as prefixed headers) and the dispatch
//! between binary and structured mode when reading.

use std::fmt::Write as _;

use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::{Envelope, EnvelopeError, SPEC_VERSION, time};

/// The CloudEvents protocol binding a message travels over; it fixes the header prefix of
/// binary content mode.
///
/// | binding | attribute headers | content type |
/// |---|---|---|
/// | [`Http`](Self::Http), [`Nats`](Self::Nats) | `ce-<attr>` | `content-type` header |
/// | [`RabbitMq`](Self::RabbitMq) (AMQP 0-9-1) | `ce-<attr>` | `content_type` property |
/// | [`Kafka`](Self::Kafka) | `ce_<attr>` | `content-type` header |
/// | [`Amqp10`](Self::Amqp10) | `cloudEvents_<attr>` (also reads `cloudEvents:`) | `content-type` property |
///
/// ```
/// use archon_events::envelope::Binding;
/// assert_eq!(Binding::Kafka.prefix(), "ce_");
/// assert_eq!(Binding::Amqp10.prefix(), "cloudEvents_");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Binding {
    /// HTTP: `ce-` headers, values percent-encoded outside printable ASCII.
    Http,
    /// NATS: `ce-` headers.
    Nats,
    /// Kafka: `ce_` headers.
    Kafka,
    /// RabbitMQ (AMQP 0-9-1): `ce-` headers, `content_type` message property.
    RabbitMq,
    /// AMQP 1.0: `cloudEvents_` application properties.
    Amqp10,
}

impl Binding {
    /// The prefix of attribute headers in binary content mode.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Http | Self::Nats | Self::RabbitMq => "ce-",
            Self::Kafka => "ce_",
            Self::Amqp10 => "cloudEvents_",
        }
    }

    /// Whether the content type travels as a `content-type` header (rather than a message
    /// property the backend sets from [`WireMessage::content_type`]).
    pub fn content_type_in_headers(self) -> bool {
        matches!(self, Self::Http | Self::Nats | Self::Kafka)
    }

    fn strip_prefix(self, name: &str) -> Option<&str> {
        let prefixes: &[&str] = match self {
            Self::Amqp10 => &["cloudEvents_", "cloudEvents:"],
            other => std::slice::from_ref(match other {
                Self::Kafka => &"ce_",
                _ => &"ce-",
            }),
        };
        prefixes.iter().find_map(|p| {
            (name.len() > p.len() && name.is_char_boundary(p.len()))
                .then(|| name.split_at(p.len()))
                .filter(|(head, _)| head.eq_ignore_ascii_case(p))
                .map(|(_, rest)| rest)
        })
    }
}

/// A message as a backend sends or receives it: headers (or application properties), the
/// content type and the body. Produced by [`Envelope::to_binary`] /
/// [`Envelope::to_structured`], read by [`Envelope::from_wire`].
///
/// ```
/// use archon_events::envelope::WireMessage;
/// let msg = WireMessage { body: "{}".into(), ..WireMessage::default() };
/// assert!(msg.header("ce-id").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireMessage {
    /// The content type (`datacontenttype` in binary mode, `application/cloudevents+json` in
    /// structured mode). Backends with a content-type property set it from here.
    pub content_type: Option<String>,
    /// Headers or application properties, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl WireMessage {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn effective_content_type(&self) -> Option<&str> {
        self.content_type
            .as_deref()
            .or_else(|| self.header("content-type"))
    }
}

/// Characters percent-encoded in HTTP header values (the HTTP binding's rule: everything outside
/// printable ASCII, plus space, `"` and `%`).
const HTTP_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

impl Envelope {
    /// Binary content mode for `binding`: attributes and extensions as prefixed headers, free-form
    /// headers as they are, the payload as the body.
    ///
    /// ```
    /// use archon_events::envelope::{Binding, Envelope};
    /// let event = Envelope::builder("/a", "t.v1").data("text/plain", "hi").build()?;
    /// let wire = event.to_binary(Binding::Http);
    /// assert_eq!(wire.header("ce-specversion"), Some("1.0"));
    /// assert_eq!(wire.header("content-type"), Some("text/plain"));
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn to_binary(&self, binding: Binding) -> WireMessage {
        let prefix = binding.prefix();
        let encode = |value: &str| -> String {
            if binding == Binding::Http {
                utf8_percent_encode(value, HTTP_VALUE).to_string()
            } else {
                value.to_owned()
            }
        };
        let mut headers = Vec::with_capacity(6 + self.extensions.len() + self.headers.len());
        let mut put = |name: &str, value: &str| {
            let mut key = String::with_capacity(prefix.len() + name.len());
            let _ = write!(key, "{prefix}{name}");
            headers.push((key, encode(value)));
        };
        put("specversion", SPEC_VERSION);
        put("id", &self.id);
        put("source", &self.source);
        put("type", &self.ty);
        if let Some(t) = self.time {
            put("time", &time::format(t));
        }
        if let Some(v) = &self.dataschema {
            put("dataschema", v);
        }
        if let Some(v) = &self.subject {
            put("subject", v);
        }
        for (name, value) in &self.extensions {
            put(name, value);
        }
        if binding.content_type_in_headers()
            && let Some(ct) = &self.datacontenttype
        {
            headers.push(("content-type".to_owned(), ct.clone()));
        }
        headers.extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        WireMessage {
            content_type: self.datacontenttype.clone(),
            headers,
            body: self.data.clone(),
        }
    }

    /// Reads an event from a wire message: structured mode when the content type is
    /// `application/cloudevents+json`, binary mode for `binding` otherwise. Every attribute,
    /// extension and header is validated; nothing panics.
    ///
    /// ```
    /// use archon_events::envelope::{Binding, Envelope, WireMessage};
    /// let wire = WireMessage {
    ///     headers: vec![
    ///         ("ce-specversion".into(), "1.0".into()),
    ///         ("ce-id".into(), "1".into()),
    ///         ("ce-source".into(), "/x".into()),
    ///         ("ce-type".into(), "t.v1".into()),
    ///         ("ce-correlationid".into(), "c-1".into()),
    ///     ],
    ///     ..WireMessage::default()
    /// };
    /// let event = Envelope::from_wire(Binding::Nats, wire)?;
    /// assert_eq!(event.metadata().correlation_id.as_deref(), Some("c-1"));
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn from_wire(binding: Binding, message: WireMessage) -> Result<Self, EnvelopeError> {
        let structured = message.effective_content_type().is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/cloudevents")
        });
        if structured {
            return Self::from_structured(&message);
        }
        let decode = |value: &str| -> Result<String, EnvelopeError> {
            if binding == Binding::Http {
                percent_decode_str(value)
                    .decode_utf8()
                    .map(|v| v.into_owned())
                    .map_err(|_| EnvelopeError::Malformed("header is not UTF-8".to_owned()))
            } else {
                Ok(value.to_owned())
            }
        };
        let mut spec = None;
        let mut envelope = Self {
            id: String::new(),
            source: String::new(),
            ty: String::new(),
            time: None,
            datacontenttype: message.effective_content_type().map(str::to_owned),
            dataschema: None,
            subject: None,
            extensions: Default::default(),
            headers: Default::default(),
            data: Bytes::new(),
        };
        let WireMessage { headers, body, .. } = message;
        envelope.data = body;
        for (name, value) in &headers {
            if let Some(attr) = binding.strip_prefix(name) {
                let attr = attr.to_ascii_lowercase();
                let value = decode(value)?;
                match attr.as_str() {
                    "specversion" => spec = Some(value),
                    "id" => envelope.id = value,
                    "source" => envelope.source = value,
                    "type" => envelope.ty = value,
                    "time" => envelope.time = Some(time::parse(&value)?),
                    "dataschema" => envelope.dataschema = Some(value),
                    "subject" => envelope.subject = Some(value),
                    "datacontenttype" => envelope.datacontenttype = Some(value),
                    _ => {
                        super::check_extension(&attr, &value)?;
                        envelope.extensions.insert(attr, value);
                    }
                }
            } else if !name.eq_ignore_ascii_case("content-type") {
                let name = name.to_ascii_lowercase();
                super::check_header(&name, value)?;
                envelope.headers.insert(name, value.clone());
            }
        }
        match spec.as_deref() {
            None => return Err(EnvelopeError::MissingAttribute("specversion")),
            Some(SPEC_VERSION) => {}
            Some(other) => {
                return Err(EnvelopeError::UnsupportedSpecVersion(
                    other.chars().take(16).collect(),
                ));
            }
        }
        envelope.validate()?;
        Ok(envelope)
    }
}
