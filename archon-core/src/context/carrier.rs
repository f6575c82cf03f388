//! Where context travels: HTTP headers, gRPC metadata, event headers, plain string maps.

use std::collections::{BTreeMap, HashMap};

/// Something context can be written into (an outgoing request's headers, an event's headers).
///
/// Implemented for `HashMap<String, String>`, `BTreeMap<String, String>` and
/// [`http::HeaderMap`]; implement it for your own carrier in three lines:
///
/// ```
/// use archon_core::context::Injector;
/// struct Headers(Vec<(String, String)>);
/// impl Injector for Headers {
///     fn set(&mut self, key: &str, value: String) {
///         self.0.push((key.to_owned(), value));
///     }
/// }
/// ```
pub trait Injector {
    /// Sets `key` (lower-case ASCII) to `value`, replacing any previous value.
    fn set(&mut self, key: &str, value: String);
}

/// Something context can be read from (an incoming request's headers, an event's headers).
///
/// ```
/// use archon_core::context::Extractor;
/// struct Headers(Vec<(String, String)>);
/// impl Extractor for Headers {
///     fn get(&self, key: &str) -> Option<&str> {
///         self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
///     }
/// }
/// ```
pub trait Extractor {
    /// The value of `key` (looked up case-insensitively where the carrier allows), if any.
    fn get(&self, key: &str) -> Option<&str>;
}

impl Injector for HashMap<String, String> {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_owned(), value);
    }
}

impl Extractor for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str).or_else(|| {
            self.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        })
    }
}

impl Injector for BTreeMap<String, String> {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_owned(), value);
    }
}

impl Extractor for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str).or_else(|| {
            self.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        })
    }
}

impl Injector for http::HeaderMap {
    fn set(&mut self, key: &str, value: String) {
        let name = http::header::HeaderName::from_bytes(key.as_bytes());
        let value = http::header::HeaderValue::from_str(&value);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                self.insert(name, value);
            }
            _ => tracing::debug!(key, "context value is not a valid HTTP header; not sent"),
        }
    }
}

impl Extractor for http::HeaderMap {
    fn get(&self, key: &str) -> Option<&str> {
        http::HeaderMap::get(self, key).and_then(|v| v.to_str().ok())
    }
}
