//! Structured content mode: the whole event as `application/cloudevents+json`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Binding, Envelope, EnvelopeError, SPEC_VERSION, WireMessage, time};

/// Content type of a structured-mode JSON event.
pub const STRUCTURED_JSON: &str = "application/cloudevents+json";

fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[derive(serde::Serialize)]
struct Out<'a> {
    #[serde(flatten)]
    attributes: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

impl Envelope {
    /// Structured content mode: the event as one `application/cloudevents+json` body. JSON
    /// payloads are embedded as `data`, UTF-8 `text/*` as a string, anything else as
    /// `data_base64`. Free-form headers stay headers.
    ///
    /// ```
    /// use archon_events::envelope::{Binding, Envelope};
    /// let event = Envelope::builder("/a", "t.v1").data("application/json", r#"{"n":1}"#).build()?;
    /// let wire = event.to_structured(Binding::Http);
    /// assert_eq!(wire.content_type.as_deref(), Some("application/cloudevents+json"));
    /// let json: serde_json::Value = serde_json::from_slice(&wire.body).unwrap();
    /// assert_eq!(json["data"]["n"], 1);
    /// assert_eq!(Envelope::from_wire(Binding::Http, wire)?, event);
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn to_structured(&self, binding: Binding) -> WireMessage {
        let time = self.time.map(time::format);
        let mut attributes: BTreeMap<&str, &str> = BTreeMap::new();
        attributes.insert("specversion", SPEC_VERSION);
        attributes.insert("id", &self.id);
        attributes.insert("source", &self.source);
        attributes.insert("type", &self.ty);
        if let Some(t) = &time {
            attributes.insert("time", t);
        }
        for (name, value) in [
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
            ("subject", &self.subject),
        ] {
            if let Some(v) = value {
                attributes.insert(name, v);
            }
        }
        for (name, value) in &self.extensions {
            attributes.insert(name, value);
        }
        let text_ct = self
            .datacontenttype
            .as_deref()
            .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/"));
        let mut data_string = None;
        let mut raw = None;
        let mut data_base64 = None;
        if !self.data.is_empty() {
            if is_json(self.datacontenttype.as_deref())
                && let Ok(value) = serde_json::from_slice::<&RawValue>(&self.data)
                && value.get().len() == self.data.len()
            {
                raw = Some(value);
            } else if text_ct && let Ok(text) = std::str::from_utf8(&self.data) {
                data_string = serde_json::to_string(text).ok();
            } else {
                data_base64 = Some(BASE64.encode(&self.data));
            }
        }
        let string_raw = data_string
            .as_deref()
            .and_then(|s| serde_json::from_str::<&RawValue>(s).ok());
        let out = Out {
            attributes,
            data: raw.or(string_raw),
            data_base64,
        };
        // Serialising strings and raw JSON into a Vec cannot fail.
        let body = serde_json::to_vec(&out).unwrap_or_default();
        let mut headers: Vec<(String, String)> = Vec::with_capacity(self.headers.len() + 1);
        if binding.content_type_in_headers() {
            headers.push(("content-type".to_owned(), STRUCTURED_JSON.to_owned()));
        }
        headers.extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        WireMessage {
            content_type: Some(STRUCTURED_JSON.to_owned()),
            headers,
            body: body.into(),
        }
    }

    pub(super) fn from_structured(message: &WireMessage) -> Result<Self, EnvelopeError> {
        let map: BTreeMap<String, &RawValue> = serde_json::from_slice(&message.body)
            .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        let string = |name: &str| -> Result<Option<String>, EnvelopeError> {
            match map.get(name) {
                None => Ok(None),
                Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                    Ok(Value::Null) => Ok(None),
                    Ok(Value::String(s)) => Ok(Some(s)),
                    _ => Err(EnvelopeError::invalid_attribute(name, "must be a string")),
                },
            }
        };
        match string("specversion")?.as_deref() {
            None => return Err(EnvelopeError::MissingAttribute("specversion")),
            Some(SPEC_VERSION) => {}
            Some(other) => {
                return Err(EnvelopeError::UnsupportedSpecVersion(
                    other.chars().take(16).collect(),
                ));
            }
        }
        let datacontenttype = string("datacontenttype")?;
        let data = match (map.get("data"), map.get("data_base64")) {
            (Some(_), Some(_)) => {
                return Err(EnvelopeError::Malformed(
                    "both data and data_base64 are present".to_owned(),
                ));
            }
            (None, Some(_)) => {
                let encoded = string("data_base64")?.unwrap_or_default();
                BASE64
                    .decode(encoded.as_bytes())
                    .map_err(|e| EnvelopeError::Malformed(format!("data_base64: {e}")))?
                    .into()
            }
            (Some(raw), None) => {
                let is_string = raw.get().starts_with('"');
                if is_string && !is_json(datacontenttype.as_deref()) {
                    string("data")?.unwrap_or_default().into_bytes().into()
                } else {
                    bytes::Bytes::copy_from_slice(raw.get().as_bytes())
                }
            }
            (None, None) => bytes::Bytes::new(),
        };
        let mut envelope = Self {
            id: string("id")?.unwrap_or_default(),
            source: string("source")?.unwrap_or_default(),
            ty: string("type")?.unwrap_or_default(),
            time: string("time")?.map(|t| time::parse(&t)).transpose()?,
            datacontenttype,
            dataschema: string("dataschema")?,
            subject: string("subject")?,
            extensions: BTreeMap::new(),
            headers: BTreeMap::new(),
            data,
        };
        for (name, raw) in &map {
            if super::RESERVED.contains(&name.as_str()) || name == "specversion" {
                continue;
            }
            let value = match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::Null) => continue,
                Ok(Value::String(s)) => s,
                Ok(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                _ => {
                    return Err(EnvelopeError::invalid_attribute(
                        name,
                        "extension values are strings, numbers or booleans",
                    ));
                }
            };
            super::check_extension(name, &value)?;
            envelope.extensions.insert(name.clone(), value);
        }
        for (name, value) in &message.headers {
            if name.eq_ignore_ascii_case("content-type") {
                continue;
            }
            let name = name.to_ascii_lowercase();
            super::check_header(&name, value)?;
            envelope.headers.insert(name, value.clone());
        }
        envelope.validate()?;
        Ok(envelope)
    }
}
