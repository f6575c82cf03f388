//! The CloudEvents 1.0 envelope every backend carries.
//!
//! An [`Envelope`] holds the CloudEvents context attributes (`id`, `source`, `specversion`,
//! `type`, `time`, `datacontenttype`, `dataschema`, `subject`), extension attributes (among them
//! `traceparent`, `tracestate`, `correlationid`, `causationid`, `partitionkey`), free-form
//! transport headers and the payload bytes. [`Envelope::to_binary`], [`Envelope::to_structured`]
//! and [`Envelope::from_wire`] map it onto each protocol binding (see [`Binding`]), so another
//! CloudEvents SDK reading the message sees a valid event.
//!
//! ```
//! use archon_events::envelope::{Binding, Envelope};
//!
//! let event = Envelope::builder("/orders", "com.example.order.created.v1")
//!     .subject("order-42")
//!     .partition_key("customer-7")
//!     .header("x-origin", "checkout")
//!     .data("application/json", r#"{"total":12}"#)
//!     .build()?;
//!
//! let wire = event.to_binary(Binding::Kafka);
//! assert!(wire.headers.iter().any(|(k, v)| k == "ce_type" && v == "com.example.order.created.v1"));
//! let back = Envelope::from_wire(Binding::Kafka, wire)?;
//! assert_eq!(back, event);
//! # Ok::<(), archon_events::Error>(())
//! ```

mod binary;
mod error;
mod structured;
mod time;

use std::collections::BTreeMap;
use std::time::SystemTime;

use archon_core::context::{Metadata, TraceParent};
use bytes::Bytes;

pub use self::binary::{Binding, WireMessage};
pub use self::error::EnvelopeError;
pub use self::structured::STRUCTURED_JSON;

/// The CloudEvents spec version this crate writes and reads.
pub const SPEC_VERSION: &str = "1.0";
/// Default largest accepted event, in bytes (1 MiB), as counted by [`Envelope::encoded_len`].
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1 << 20;

/// Names of the CloudEvents extension attributes Archon uses.
pub mod extensions {
    /// W3C trace parent of the producer (Distributed Tracing extension).
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state of the producer.
    pub const TRACESTATE: &str = "tracestate";
    /// Correlation id shared by everything done for one business request.
    pub const CORRELATION_ID: &str = "correlationid";
    /// Id of the event or request that caused this one.
    pub const CAUSATION_ID: &str = "causationid";
    /// Tenant the event belongs to.
    pub const TENANT_ID: &str = "tenantid";
    /// Partition key: events with the same key keep their order (Partitioning extension).
    pub const PARTITION_KEY: &str = "partitionkey";
}

/// Context attribute names that cannot be used as extension names.
pub(crate) const RESERVED: &[&str] = &[
    "id",
    "source",
    "specversion",
    "type",
    "time",
    "datacontenttype",
    "dataschema",
    "subject",
    "data",
    "data_base64",
];

const MAX_ATTRIBUTE_LEN: usize = 4096;
const MAX_HEADER_VALUE_LEN: usize = 8192;

/// One CloudEvents 1.0 event plus transport headers: what every backend carries.
///
/// Build one with [`Envelope::builder`]; reading never panics and decoding gives an
/// [`EnvelopeError`] for bad input.
///
/// ```
/// use archon_events::Envelope;
/// let event = Envelope::builder("/billing", "com.example.invoice.paid.v1").build()?;
/// assert_eq!(event.spec_version(), "1.0");
/// assert_eq!(event.id().len(), 36); // a UUIDv7
/// # Ok::<(), archon_events::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub(crate) id: String,
    pub(crate) source: String,
    pub(crate) ty: String,
    pub(crate) time: Option<SystemTime>,
    pub(crate) datacontenttype: Option<String>,
    pub(crate) dataschema: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) extensions: BTreeMap<String, String>,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) data: Bytes,
}

impl Envelope {
    /// Starts an event from `source` (a URI-reference) of type `ty` (reverse-DNS, versioned,
    /// e.g. `com.example.order.created.v1`), with a fresh UUIDv7 `id` and `time` now.
    ///
    /// ```
    /// let event = archon_events::Envelope::builder("/a", "t.v1").data("text/plain", "hi").build()?;
    /// assert_eq!(&event.data()[..], b"hi");
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn builder(source: impl Into<String>, ty: impl Into<String>) -> EnvelopeBuilder {
        EnvelopeBuilder {
            envelope: Self {
                id: uuid::Uuid::now_v7().to_string(),
                source: source.into(),
                ty: ty.into(),
                time: Some(SystemTime::now()),
                datacontenttype: None,
                dataschema: None,
                subject: None,
                extensions: BTreeMap::new(),
                headers: BTreeMap::new(),
                data: Bytes::new(),
            },
        }
    }

    /// The event id (`id`); with `source` it identifies the event (a dedupe key).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The producer (`source`).
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Always `"1.0"` (`specversion`).
    pub fn spec_version(&self) -> &'static str {
        SPEC_VERSION
    }
    /// The event type (`type`).
    pub fn event_type(&self) -> &str {
        &self.ty
    }
    /// When the event happened (`time`).
    pub fn time(&self) -> Option<SystemTime> {
        self.time
    }
    /// Media type of the payload (`datacontenttype`).
    pub fn data_content_type(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }
    /// Schema of the payload (`dataschema`).
    pub fn data_schema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }
    /// What the event is about, within the source (`subject`).
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
    /// One extension attribute.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions.get(name).map(String::as_str)
    }
    /// All extension attributes, by name.
    pub fn extensions(&self) -> &BTreeMap<String, String> {
        &self.extensions
    }
    /// One free-form header (names are lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .or_else(|| self.headers.get(&name.to_ascii_lowercase()))
            .map(String::as_str)
    }
    /// All free-form headers, by lower-case name.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }
    /// The partition key (`partitionkey` extension): events with the same key keep their order.
    pub fn partition_key(&self) -> Option<&str> {
        self.extension(extensions::PARTITION_KEY)
    }
    /// The `source` + `id` pair that identifies this event, for deduplication.
    pub fn dedupe_key(&self) -> String {
        format!("{}\u{1f}{}", self.source, self.id)
    }

    /// The trace, correlation, causation and tenant context carried in the extensions.
    /// Invalid values are dropped, never trusted.
    ///
    /// ```
    /// use archon_core::context::Metadata;
    /// use archon_events::Envelope;
    /// let md = Metadata::new_root().with_causation_id("cmd-1");
    /// let event = Envelope::builder("/a", "t.v1").metadata(&md).build()?;
    /// assert_eq!(event.metadata(), md);
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn metadata(&self) -> Metadata {
        Metadata::extract(&ExtensionCarrier(&self.extensions))
    }

    /// Writes `metadata` into the extensions (absent fields are removed).
    ///
    /// ```
    /// # use archon_core::context::Metadata;
    /// let mut event = archon_events::Envelope::builder("/a", "t.v1").build()?;
    /// event.set_metadata(&Metadata::default().with_correlation_id("c-9"));
    /// assert_eq!(event.extension("correlationid"), Some("c-9"));
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn set_metadata(&mut self, metadata: &Metadata) {
        let mut map = std::collections::HashMap::new();
        metadata.inject(&mut map);
        for (ext, key) in METADATA_MAP {
            match map.remove(key) {
                Some(value) if is_printable(&value) => {
                    self.extensions.insert(ext.to_owned(), value);
                }
                _ => {
                    self.extensions.remove(ext);
                }
            }
        }
    }

    /// Sets a free-form header (the name is lower-cased). Invalid names or values are errors.
    ///
    /// ```
    /// let mut event = archon_events::Envelope::builder("/a", "t.v1").build()?;
    /// event.insert_header("X-Origin", "web")?;
    /// assert_eq!(event.header("x-origin"), Some("web"));
    /// assert!(event.insert_header("bad name", "v").is_err());
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn insert_header(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), EnvelopeError> {
        let name = name.into().to_ascii_lowercase();
        let value = value.into();
        check_header(&name, &value)?;
        self.headers.insert(name, value);
        Ok(())
    }

    /// Removes a free-form header, returning its value.
    pub fn remove_header(&mut self, name: &str) -> Option<String> {
        self.headers.remove(&name.to_ascii_lowercase())
    }

    /// Sets an extension attribute. Names are lower-case `a-z0-9` (at most 64) and not a
    /// context attribute name; values are printable text.
    ///
    /// ```
    /// let mut event = archon_events::Envelope::builder("/a", "t.v1").build()?;
    /// event.insert_extension("sequence", "7")?;
    /// assert!(event.insert_extension("Bad-Name", "x").is_err());
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn insert_extension(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), EnvelopeError> {
        let name = name.into();
        let value = value.into();
        check_extension(&name, &value)?;
        self.extensions.insert(name, value);
        Ok(())
    }

    /// Replaces the payload and its content type.
    pub fn set_data(&mut self, content_type: impl Into<String>, data: impl Into<Bytes>) {
        self.datacontenttype = Some(content_type.into());
        self.data = data.into();
    }

    /// Size counted against the event size limit: payload plus every attribute, extension and
    /// header name and value.
    ///
    /// ```
    /// let event = archon_events::Envelope::builder("/a", "t.v1").data("text/plain", "12345").build()?;
    /// assert!(event.encoded_len() > 5);
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn encoded_len(&self) -> usize {
        let opt = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        self.data.len()
            + self.id.len()
            + self.source.len()
            + self.ty.len()
            + 64
            + opt(&self.datacontenttype)
            + opt(&self.dataschema)
            + opt(&self.subject)
            + self
                .extensions
                .iter()
                .chain(self.headers.iter())
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// Fails with [`Error::TooLarge`](crate::Error::TooLarge) when the event is over `limit`
    /// bytes. Backends call this before publishing.
    ///
    /// ```
    /// let event = archon_events::Envelope::builder("/a", "t.v1").data("text/plain", vec![0u8; 2048]).build()?;
    /// assert!(event.check_size(1024).is_err());
    /// assert!(event.check_size(4096).is_ok());
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn check_size(&self, limit: usize) -> crate::Result<()> {
        let size = self.encoded_len();
        if size > limit {
            Err(crate::Error::TooLarge { size, limit })
        } else {
            Ok(())
        }
    }

    /// Checks every attribute, extension and header: what decoding from the wire also checks.
    ///
    /// ```
    /// let event = archon_events::Envelope::builder("", "t.v1").build();
    /// assert!(event.is_err(), "source is required");
    /// ```
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_required("id", &self.id)?;
        check_required("source", &self.source)?;
        check_required("type", &self.ty)?;
        for (name, value) in [
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
            ("subject", &self.subject),
        ] {
            if let Some(value) = value {
                check_attribute(name, value)?;
            }
        }
        for (name, value) in &self.extensions {
            check_extension(name, value)?;
        }
        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        Ok(())
    }
}

/// Builds an [`Envelope`]; [`build`](Self::build) validates everything at once.
///
/// ```
/// use archon_events::Envelope;
/// let event = Envelope::builder("/orders", "com.example.order.created.v1")
///     .id("order-42-created")
///     .extension("sequence", "1")
///     .build()?;
/// assert_eq!(event.id(), "order-42-created");
/// # Ok::<(), archon_events::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct EnvelopeBuilder {
    envelope: Envelope,
}

impl EnvelopeBuilder {
    /// Replaces the generated UUIDv7 id (e.g. with a business key, for deduplication).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.envelope.id = id.into();
        self
    }
    /// Sets or clears `time`.
    pub fn time(mut self, time: Option<SystemTime>) -> Self {
        self.envelope.time = time;
        self
    }
    /// Sets `subject`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.envelope.subject = Some(subject.into());
        self
    }
    /// Sets `dataschema`.
    pub fn data_schema(mut self, schema: impl Into<String>) -> Self {
        self.envelope.dataschema = Some(schema.into());
        self
    }
    /// Sets the payload and `datacontenttype`.
    pub fn data(mut self, content_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        self.envelope.set_data(content_type, data);
        self
    }
    /// Sets the `partitionkey` extension.
    pub fn partition_key(self, key: impl Into<String>) -> Self {
        self.extension(extensions::PARTITION_KEY, key)
    }
    /// Sets an extension attribute (checked by [`build`](Self::build)).
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.envelope.extensions.insert(name.into(), value.into());
        self
    }
    /// Sets a free-form header (name lower-cased; checked by [`build`](Self::build)).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.envelope
            .headers
            .insert(name.into().to_ascii_lowercase(), value.into());
        self
    }
    /// Writes trace, correlation, causation and tenant context into the extensions.
    pub fn metadata(mut self, metadata: &Metadata) -> Self {
        self.envelope.set_metadata(metadata);
        self
    }
    /// Continues the trace of the current task ([`Metadata::current`]) or starts a new one.
    pub fn current_metadata(self) -> Self {
        let mut md = Metadata::current().unwrap_or_default().or_new_root();
        md.traceparent = md.traceparent.map(|tp: TraceParent| tp.child());
        self.metadata(&md)
    }
    /// Validates and returns the envelope.
    pub fn build(self) -> Result<Envelope, EnvelopeError> {
        self.envelope.validate()?;
        Ok(self.envelope)
    }
}

const METADATA_MAP: [(&str, &str); 5] = [
    (
        extensions::TRACEPARENT,
        archon_core::context::keys::TRACEPARENT,
    ),
    (
        extensions::TRACESTATE,
        archon_core::context::keys::TRACESTATE,
    ),
    (
        extensions::CORRELATION_ID,
        archon_core::context::keys::CORRELATION_ID,
    ),
    (
        extensions::CAUSATION_ID,
        archon_core::context::keys::CAUSATION_ID,
    ),
    (extensions::TENANT_ID, archon_core::context::keys::TENANT_ID),
];

/// Reads context keys ([`archon_core::context::keys`]) from the matching extensions.
struct ExtensionCarrier<'a>(&'a BTreeMap<String, String>);

impl archon_core::context::Extractor for ExtensionCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        METADATA_MAP
            .iter()
            .find(|(_, k)| k.eq_ignore_ascii_case(key))
            .and_then(|(ext, _)| self.0.get(*ext))
            .map(String::as_str)
    }
}

fn is_printable(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

fn check_required(name: &'static str, value: &str) -> Result<(), EnvelopeError> {
    if value.is_empty() {
        return Err(EnvelopeError::MissingAttribute(name));
    }
    check_attribute(name, value)
}

fn check_attribute(name: &str, value: &str) -> Result<(), EnvelopeError> {
    if value.len() > MAX_ATTRIBUTE_LEN {
        return Err(EnvelopeError::invalid_attribute(
            name,
            "longer than 4096 bytes",
        ));
    }
    if !is_printable(value) {
        return Err(EnvelopeError::invalid_attribute(
            name,
            "contains control characters",
        ));
    }
    Ok(())
}

pub(crate) fn check_extension(name: &str, value: &str) -> Result<(), EnvelopeError> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !name_ok {
        return Err(EnvelopeError::invalid_attribute(
            name,
            "extension names are 1-64 characters a-z and 0-9",
        ));
    }
    if RESERVED.contains(&name) {
        return Err(EnvelopeError::invalid_attribute(
            name,
            "is a context attribute, not an extension",
        ));
    }
    check_attribute(name, value)
}

pub(crate) fn check_header(name: &str, value: &str) -> Result<(), EnvelopeError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > 128 || !name.bytes().all(token) {
        return Err(EnvelopeError::invalid_header(
            name,
            "names are 1-128 HTTP token characters",
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("ce-")
        || lower.starts_with("ce_")
        || lower.starts_with("cloudevents")
        || lower == "content-type"
    {
        return Err(EnvelopeError::invalid_header(
            name,
            "is reserved for CloudEvents attributes",
        ));
    }
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(EnvelopeError::invalid_header(
            name,
            "value longer than 8 KiB",
        ));
    }
    if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(EnvelopeError::invalid_header(
            name,
            "value contains control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
