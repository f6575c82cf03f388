//! Typed handlers as tower services.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{EventContext, HandlerError, HandlerErrorKind};
use crate::{Codec, EnvelopeEventExt as _, Event};

/// The type-erased service every route's middleware stack wraps: takes an [`EventContext`],
/// settles nothing (the router settles from the result).
pub type HandlerService = tower::util::BoxCloneService<EventContext, (), HandlerError>;

/// A typed handler as a service: decodes `T` (a wrong type or bad payload is a
/// [`HandlerErrorKind::Decode`] error), calls the handler, and turns a panic into a
/// [`HandlerErrorKind::Panic`] error.
pub(crate) struct TypedHandler<T, C, H> {
    handler: H,
    codec: Arc<C>,
    _marker: PhantomData<fn() -> T>,
}

impl<T, C, H> TypedHandler<T, C, H> {
    pub(crate) fn new(handler: H, codec: C) -> Self {
        Self {
            handler,
            codec: Arc::new(codec),
            _marker: PhantomData,
        }
    }
}

impl<T, C, H: Clone> Clone for TypedHandler<T, C, H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            codec: Arc::clone(&self.codec),
            _marker: PhantomData,
        }
    }
}

impl<T, C, H, Fut> tower_service::Service<EventContext> for TypedHandler<T, C, H>
where
    T: Event,
    C: Codec<T>,
    H: Fn(EventContext, T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: EventContext) -> Self::Future {
        let value = match ctx.envelope().decode::<T, C>(&self.codec) {
            Ok(value) => value,
            Err(error) => {
                return Box::pin(futures::future::ready(Err(HandlerError::new(
                    HandlerErrorKind::Decode,
                    error,
                ))));
            }
        };
        let handler = self.handler.clone();
        Box::pin(async move {
            match AssertUnwindSafe(async move { handler(ctx, value).await })
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(panic) => Err(HandlerError::new(
                    HandlerErrorKind::Panic,
                    panic_message(panic.as_ref()),
                )),
            }
        })
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    format!("handler panicked: {text}")
}
