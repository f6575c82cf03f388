//! Client-side RED metrics, spans and trace-context injection.

mod layer;

pub use self::layer::ObserveClientLayer;

use std::task::{Context, Poll};

use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

use crate::observe::{Call, Peer, Protocol, Side, grpc_method, is_grpc, method_str};
use crate::server::future::ResponseFuture;

/// Records `http.client.request.duration` or `rpc.client.call.duration` (gRPC requests are told
/// apart by `content-type: application/grpc`) for every outgoing request, runs it in a client
/// span and writes the span's W3C trace context and the correlation id in scope into the
/// request headers.
///
/// Labels: method (`_OTHER` for unknown ones), `server.address`, `server.port`, `url.scheme`,
/// status code (HTTP) or code name (gRPC, from the trailers), and `error.type` for 4xx/5xx,
/// non-OK gRPC codes, or `_OTHER` when no response came.
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt as _};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = ServiceBuilder::new()
///     .layer(archon_metrics::ObserveClientLayer::new())
///     .service_fn(|req: http::Request<String>| async move {
///         Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
///     });
/// let response = client.oneshot(http::Request::new("ping".to_owned())).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ObserveClient<S> {
    inner: S,
    config: ObserveClientLayer,
}

impl<S> ObserveClient<S> {
    /// Wraps `inner` with metrics and spans on.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            config: ObserveClientLayer::new(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ObserveClient<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: std::fmt::Display,
{
    type Response = http::Response<crate::ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("https") => Some("https"),
            Some("http") => Some("http"),
            _ => None,
        };
        let peer = match &self.config.peer {
            Some(peer) => peer.clone(),
            None => Peer {
                address: uri
                    .host()
                    .map(|h| crate::observe::shared(h.trim_matches(['[', ']']))),
                port: uri
                    .port_u16()
                    .or(match scheme {
                        Some("https") => Some(443),
                        Some("http") => Some(80),
                        _ => None,
                    })
                    .map(|p| crate::observe::shared(p.to_string())),
            },
        };
        let protocol = if is_grpc(&request) {
            Protocol::Grpc {
                method: grpc_method(uri.path()),
            }
        } else {
            Protocol::Http {
                method: method_str(request.method()),
                route: None,
                scheme,
            }
        };
        let span = if self.config.tracing {
            client_span(&mut request, &protocol, &peer)
        } else {
            Span::none()
        };
        let call = Call::new(Side::Client, protocol, peer, self.config.metrics, span);
        let future = {
            let _entered = call.span().map(Span::enter);
            self.inner.call(request)
        };
        ResponseFuture::new(future, call)
    }
}

fn client_span<B>(request: &mut http::Request<B>, protocol: &Protocol, peer: &Peer) -> Span {
    let address = peer.address.as_deref();
    let port = peer.port.as_deref();
    let span = match protocol {
        Protocol::Http { method, .. } => tracing::info_span!(
            target: "archon_metrics::client",
            "HTTP request",
            otel.name = method,
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            http.request.method = method,
            url.full = %request.uri(),
            server.address = address,
            server.port = port,
            http.response.status_code = Empty,
            "error.type" = Empty,
            trace_id = Empty,
            span_id = Empty,
        ),
        Protocol::Grpc { method } => tracing::info_span!(
            target: "archon_metrics::client",
            "gRPC request",
            otel.name = &**method,
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            rpc.system.name = crate::names::value::GRPC,
            rpc.method = &**method,
            server.address = address,
            server.port = port,
            rpc.response.status_code = Empty,
            "error.type" = Empty,
            trace_id = Empty,
            span_id = Empty,
        ),
    };
    if !span.is_disabled() {
        crate::otel::record_ids(&span);
    }
    crate::propagation::inject_span(&span, request.headers_mut());
    span
}
