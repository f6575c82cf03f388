//! Server-side RED metrics and spans for axum and tonic.

pub(crate) mod future;
mod layer;

pub use self::layer::ObserveServerLayer;

use std::task::{Context, Poll};

use archon_core::context::Metadata;
use axum::extract::MatchedPath;
use opentelemetry::trace::TraceContextExt as _;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use self::future::ResponseFuture;
use crate::observe::{Call, Peer, Protocol, Side, grpc_method, is_grpc, method_str};
use crate::propagation::{self, ContextMetadata};

/// Records `http.server.request.duration` (HTTP) or `rpc.server.call.duration` (gRPC, told apart
/// by `content-type: application/grpc`) for every request, and runs it in a server span whose
/// parent is the incoming W3C trace context.
///
/// - HTTP: labelled by method (unknown ones become `_OTHER`), the matched axum route template
///   (never the raw path; absent when no route matched), status code and `error.type` for 5xx.
///   Recorded when the response head is ready.
/// - gRPC: labelled by `rpc.system.name=grpc`, the fully qualified `rpc.method` (`_OTHER` when
///   the method is `UNIMPLEMENTED`, so callers cannot invent series) and the status code name,
///   read from the trailers. Recorded when the status is known; a call dropped before that is
///   `CANCELLED`.
/// - Spans: `otel.kind=server`, named `{method} {route}` or `package.Service/Method`, with
///   `trace_id`, `span_id` and `correlation_id` fields for log lines. An invalid `traceparent`
///   starts a new trace. The request gets an [`archon_core::context::Metadata`] extension with
///   the correlation id (a new one if none came) when the span is enabled and this span's trace parent.
///
/// Put it on an axum router with `Router::layer` (so the matched route is known) or on a tonic
/// server with `Server::builder().layer(...)`.
///
/// ```
/// use tower::ServiceExt as _;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = archon_metrics::ObserveServer::new(tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
/// }));
/// let response = svc.oneshot(http::Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ObserveServer<S> {
    inner: S,
    config: ObserveServerLayer,
}

impl<S> ObserveServer<S> {
    /// Wraps `inner` with metrics and spans on.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            config: ObserveServerLayer::new(),
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

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ObserveServer<S>
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
        let protocol = if is_grpc(&request) {
            Protocol::Grpc {
                method: grpc_method(request.uri().path()),
            }
        } else {
            Protocol::Http {
                method: method_str(request.method()),
                route: request.extensions().get::<MatchedPath>().cloned(),
                scheme: None,
            }
        };
        let span = if self.config.tracing {
            server_span(&mut request, &protocol)
        } else {
            Span::none()
        };
        let call = Call::new(
            Side::Server,
            protocol,
            Peer::default(),
            self.config.metrics,
            span,
        );
        let future = {
            let _entered = call.span().map(Span::enter);
            self.inner.call(request)
        };
        ResponseFuture::new(future, call)
    }
}

/// Creates the server span, parents it on the incoming trace context and stores the request's
/// [`Metadata`] in its extensions.
fn server_span<B>(request: &mut http::Request<B>, protocol: &Protocol) -> Span {
    let span = match protocol {
        Protocol::Http { method, route, .. } => {
            let route = route.as_ref().map(MatchedPath::as_str);
            tracing::info_span!(
                target: "archon_metrics::server",
                "HTTP request",
                otel.name = %match route {
                    Some(route) => format!("{method} {route}"),
                    None => (*method).to_owned(),
                },
                otel.kind = "server",
                otel.status_code = Empty,
                otel.status_description = Empty,
                http.request.method = method,
                http.route = route,
                url.path = request.uri().path(),
                http.response.status_code = Empty,
                "error.type" = Empty,
                trace_id = Empty,
                span_id = Empty,
                correlation_id = Empty,
            )
        }
        Protocol::Grpc { method } => tracing::info_span!(
            target: "archon_metrics::server",
            "gRPC request",
            otel.name = &**method,
            otel.kind = "server",
            otel.status_code = Empty,
            otel.status_description = Empty,
            rpc.system.name = crate::names::value::GRPC,
            rpc.method = &**method,
            rpc.response.status_code = Empty,
            "error.type" = Empty,
            trace_id = Empty,
            span_id = Empty,
            correlation_id = Empty,
        ),
    };
    if span.is_disabled() {
        return span;
    }
    let mut metadata = Metadata::extract(request.headers());
    if metadata.correlation_id.is_none() {
        metadata = metadata.with_correlation_id(new_correlation_id());
    }
    let parent = propagation::extract(request.headers());
    let parent = parent.with_value(ContextMetadata::ids_of(&metadata));
    // Err only when no OpenTelemetry layer is installed: the span is then a plain tracing span.
    let _ = span.set_parent(parent);
    crate::otel::record_ids(&span);
    if let Some(correlation_id) = metadata.correlation_id.as_deref() {
        span.record("correlation_id", correlation_id);
    }
    let cx = span.context();
    if let Some(tp) = propagation::traceparent_of(cx.span().span_context()) {
        metadata.traceparent = Some(tp);
    }
    request.extensions_mut().insert(metadata);
    span
}

fn new_correlation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
