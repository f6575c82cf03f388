//! What the server and client layers share: classifying a request, and recording its outcome as
//! a RED metric and on its span.

mod body;
pub(crate) mod series;

pub use self::body::ObservedBody;

use std::time::Instant;

use metrics::SharedString;
use tracing::Span;

use crate::names::{self, attr, value};

/// Which side of a call we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// The protocol-specific part of a call.
#[derive(Debug)]
pub(crate) enum Protocol {
    Http {
        method: &'static str,
        /// Matched route template (server) when known.
        route: Option<axum::extract::MatchedPath>,
        scheme: Option<&'static str>,
    },
    Grpc {
        /// `package.Service/Method`.
        method: SharedString,
    },
}

/// The peer of a client call (`server.address`, `server.port`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer {
    pub(crate) address: Option<SharedString>,
    pub(crate) port: Option<SharedString>,
}

/// One call in flight. Dropping an unfinished gRPC call records it as `CANCELLED`.
#[derive(Debug)]
pub(crate) struct Call {
    data: Option<CallData>,
}

#[derive(Debug)]
struct CallData {
    side: Side,
    start: Instant,
    protocol: Protocol,
    peer: Peer,
    metrics: bool,
    span: Span,
}

impl Call {
    pub(crate) fn new(
        side: Side,
        protocol: Protocol,
        peer: Peer,
        metrics: bool,
        span: Span,
    ) -> Self {
        Self {
            data: Some(CallData {
                side,
                start: Instant::now(),
                protocol,
                peer,
                metrics,
                span,
            }),
        }
    }

    pub(crate) fn span(&self) -> Option<&Span> {
        self.data.as_ref().map(|d| &d.span)
    }

    pub(crate) fn is_grpc(&self) -> bool {
        matches!(
            self.data.as_ref().map(|d| &d.protocol),
            Some(Protocol::Grpc { .. })
        )
    }

    /// An HTTP response (or the headers of a gRPC one) arrived.
    pub(crate) fn finish_http(&mut self, status: u16) {
        if let Some(data) = self.data.take() {
            data.finish(Outcome::Http(status));
        }
    }

    /// The gRPC status is known.
    pub(crate) fn finish_grpc(&mut self, code: i32) {
        if let Some(data) = self.data.take() {
            data.finish(Outcome::Grpc(code));
        }
    }

    /// The inner service failed without a response.
    pub(crate) fn finish_error(&mut self, error: &dyn std::fmt::Display) {
        if let Some(data) = self.data.take() {
            if !data.span.is_disabled() {
                data.span
                    .record("otel.status_description", tracing::field::display(error));
            }
            data.finish(Outcome::Error);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(data) = self.data.take()
            && matches!(data.protocol, Protocol::Grpc { .. })
        {
            data.finish(Outcome::Grpc(GRPC_CANCELLED));
        }
    }
}

const GRPC_CANCELLED: i32 = 1;
const GRPC_UNIMPLEMENTED: i32 = 12;

#[derive(Clone, Copy)]
enum Outcome {
    Http(u16),
    Grpc(i32),
    Error,
}

impl CallData {
    fn finish(self, outcome: Outcome) {
        let seconds = self.start.elapsed().as_secs_f64();
        let error_type = self.error_type(&outcome);
        self.record_span(&outcome, error_type);
        if !self.metrics {
            return;
        }
        let mut labels = series::Labels::default();
        let name = match (&self.protocol, self.side) {
            (
                Protocol::Http {
                    method,
                    route,
                    scheme,
                },
                side,
            ) => {
                labels.push(attr::HTTP_REQUEST_METHOD, method);
                if let Some(scheme) = scheme {
                    labels.push(attr::URL_SCHEME, scheme);
                }
                if let Outcome::Http(status) = outcome {
                    labels.push(attr::HTTP_RESPONSE_STATUS_CODE, status_str(status));
                }
                if side == Side::Server {
                    if let Some(route) = route {
                        labels.push(attr::HTTP_ROUTE, route.as_str());
                    }
                    names::HTTP_SERVER_REQUEST_DURATION.name
                } else {
                    names::HTTP_CLIENT_REQUEST_DURATION.name
                }
            }
            (Protocol::Grpc { method }, side) => {
                labels.push(attr::RPC_SYSTEM_NAME, value::GRPC);
                let code = match outcome {
                    Outcome::Grpc(code) => Some(code),
                    _ => None,
                };
                // An unknown method name comes from the caller: never let it become a series.
                if code == Some(GRPC_UNIMPLEMENTED) {
                    labels.push(attr::RPC_METHOD, value::OTHER);
                } else {
                    labels.push(attr::RPC_METHOD, method);
                }
                if let Some(code) = code {
                    labels.push(attr::RPC_RESPONSE_STATUS_CODE, grpc_code_name(code));
                }
                if side == Side::Server {
                    names::RPC_SERVER_CALL_DURATION.name
                } else {
                    names::RPC_CLIENT_CALL_DURATION.name
                }
            }
        };
        if self.side == Side::Client {
            if let Some(address) = &self.peer.address {
                labels.push(attr::SERVER_ADDRESS, address);
            }
            if let Some(port) = &self.peer.port {
                labels.push(attr::SERVER_PORT, port);
            }
        }
        if let Some(error_type) = error_type {
            labels.push(attr::ERROR_TYPE, error_type);
        }
        series::record(name, &labels, seconds);
    }

    /// `error.type` per the conventions: HTTP 5xx on servers, 4xx and 5xx on clients; gRPC
    /// server-fault codes on servers, any non-OK code on clients; `_OTHER` when no response came.
    fn error_type(&self, outcome: &Outcome) -> Option<&'static str> {
        match *outcome {
            Outcome::Http(status) => {
                let floor = if self.side == Side::Server { 500 } else { 400 };
                (status >= floor).then(|| status_str(status))
            }
            Outcome::Grpc(code) => {
                let is_error = match self.side {
                    Side::Client => code != 0,
                    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
                    Side::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
                };
                is_error.then(|| grpc_code_name(code))
            }
            Outcome::Error => Some(value::OTHER),
        }
    }

    fn record_span(&self, outcome: &Outcome, error_type: Option<&'static str>) {
        let span = &self.span;
        if span.is_disabled() {
            return;
        }
        match *outcome {
            Outcome::Http(status) => {
                span.record(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
            }
            Outcome::Grpc(code) => {
                span.record(attr::RPC_RESPONSE_STATUS_CODE, grpc_code_name(code));
            }
            Outcome::Error => {}
        }
        if let Some(error_type) = error_type {
            span.record(attr::ERROR_TYPE, error_type);
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The method label: one of the standard methods, else `_OTHER` (bounded cardinality).
pub(crate) fn method_str(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => value::OTHER,
    }
}

/// "100100101102...999": every status code's digits, so a status label is a `&'static str`.
const STATUS_DIGITS: [u8; 2700] = {
    let mut out = [0u8; 2700];
    let mut i = 0;
    while i < 900 {
        let code = i + 100;
        out[i * 3] = b'0' + (code / 100) as u8;
        out[i * 3 + 1] = b'0' + (code / 10 % 10) as u8;
        out[i * 3 + 2] = b'0' + (code % 10) as u8;
        i += 1;
    }
    out
};

const STATUS_TEXT: &str = match std::str::from_utf8(&STATUS_DIGITS) {
    Ok(text) => text,
    Err(_) => "",
};

/// A status code as a static string (`"404"`); out-of-range codes become `_OTHER`.
pub(crate) fn status_str(status: u16) -> &'static str {
    let Some(i) = (status as usize).checked_sub(100) else {
        return value::OTHER;
    };
    STATUS_TEXT.get(i * 3..i * 3 + 3).unwrap_or(value::OTHER)
}

/// The gRPC status code name (`UNAVAILABLE`), `_OTHER` outside 0..=16.
pub(crate) fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or(value::OTHER)
}

/// Whether a request is gRPC (`content-type: application/grpc[+proto|...]`).
pub(crate) fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status in a header map (trailers, or the headers of a trailers-only response).
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// A label value whose clones (the exporter's retained key, per-call label vectors) share one
/// allocation instead of copying the string.
pub(crate) fn shared(value: impl Into<std::sync::Arc<str>>) -> SharedString {
    SharedString::from_shared(value.into())
}

/// `package.Service/Method` from a gRPC request path.
pub(crate) fn grpc_method(path: &str) -> SharedString {
    shared(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_codes_digits() {
        assert_eq!(status_str(200), "200");
        assert_eq!(status_str(404), "404");
        assert_eq!(status_str(599), "599");
        assert_eq!(status_str(999), "999");
        assert_eq!(status_str(99), "_OTHER");
        assert_eq!(status_str(1000), "_OTHER");
    }

    #[test]
    fn unknown_methods_become_other() {
        assert_eq!(method_str(&http::Method::GET), "GET");
        let custom = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_str(&custom), "_OTHER");
    }

    #[test]
    fn grpc_codes_have_names() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(14), "UNAVAILABLE");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(17), "_OTHER");
        assert_eq!(grpc_code_name(-1), "_OTHER");
    }
}
