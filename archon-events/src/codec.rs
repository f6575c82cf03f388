//! Typed events and the codecs that turn them into payload bytes.

use std::fmt;

use archon_core::BoxError;
use bytes::Bytes;

use crate::envelope::{Envelope, EnvelopeBuilder};

/// An event type with a stable, versioned CloudEvents `type` name.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderCreated { order_id: u64 }
///
/// impl archon_events::Event for OrderCreated {
///     const TYPE: &'static str = "com.example.order.created.v1";
/// }
/// ```
pub trait Event: Send + Sync + 'static {
    /// The CloudEvents `type`, e.g. `com.example.order.created.v1`. Never change it for a
    /// published type; add a new version instead.
    const TYPE: &'static str;
}

/// Why an event could not be encoded or decoded.
///
/// ```
/// use archon_events::{Codec, CodecError, JsonCodec};
/// let err = <JsonCodec as Codec<u32>>::decode(&JsonCodec, b"not json").unwrap_err();
/// assert!(matches!(err, CodecError::Decode { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The event has another `type` than the handler expects.
    #[error("unexpected event type `{found}` (expected `{expected}`)")]
    UnexpectedType {
        /// The type the handler reads.
        expected: &'static str,
        /// The type the event carries.
        found: String,
    },
    /// The payload could not be decoded.
    #[error("cannot decode `{ty}`: {source}")]
    Decode {
        /// The event type.
        ty: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The value could not be encoded.
    #[error("cannot encode `{ty}`: {source}")]
    Encode {
        /// The event type.
        ty: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

/// Turns values of `T` into payload bytes and back.
///
/// A complete implementation for plain UTF-8 text:
///
/// ```
/// use archon_events::{Codec, CodecError};
/// #[derive(Debug, Clone, Copy, Default)]
/// struct Utf8;
/// impl Codec<String> for Utf8 {
///     fn content_type(&self) -> &'static str { "text/plain; charset=utf-8" }
///     fn encode(&self, value: &String) -> Result<bytes::Bytes, CodecError> {
///         Ok(bytes::Bytes::copy_from_slice(value.as_bytes()))
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
///         String::from_utf8(bytes.to_vec())
///             .map_err(|e| CodecError::Decode { ty: "text", source: e.into() })
///     }
/// }
/// assert_eq!(Utf8.decode(&Utf8.encode(&"hi".to_owned())?)?, "hi");
/// # Ok::<(), CodecError>(())
/// ```
pub trait Codec<T>: Send + Sync + fmt::Debug + 'static {
    /// The `datacontenttype` this codec writes.
    fn content_type(&self) -> &'static str;
    /// Encodes a value.
    fn encode(&self, value: &T) -> Result<Bytes, CodecError>;
    /// Decodes a value.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// JSON via serde: the default codec (`application/json`).
///
/// ```
/// use archon_events::{Codec, JsonCodec};
/// let bytes = JsonCodec.encode(&vec![1, 2])?;
/// assert_eq!(&bytes[..], b"[1,2]");
/// # Ok::<(), archon_events::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<T> Codec<T> for JsonCodec
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    fn content_type(&self) -> &'static str {
        "application/json"
    }
    fn encode(&self, value: &T) -> Result<Bytes, CodecError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| CodecError::Encode {
                ty: std::any::type_name::<T>(),
                source: e.into(),
            })
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::Decode {
            ty: std::any::type_name::<T>(),
            source: e.into(),
        })
    }
}

/// Helpers to put typed events into envelopes and read them back.
pub trait EnvelopeEventExt {
    /// Decodes the payload as `T` with `codec`, after checking the event `type`.
    ///
    /// ```
    /// use archon_events::{Envelope, EnvelopeEventExt, Event, JsonCodec};
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Ping(u32);
    /// impl Event for Ping { const TYPE: &'static str = "com.example.ping.v1"; }
    ///
    /// let env = Envelope::event("/a", &Ping(7), &JsonCodec)?.build()?;
    /// assert_eq!(env.decode::<Ping, _>(&JsonCodec)?, Ping(7));
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    fn decode<T: Event, C: Codec<T>>(&self, codec: &C) -> Result<T, CodecError>;
}

impl EnvelopeEventExt for Envelope {
    fn decode<T: Event, C: Codec<T>>(&self, codec: &C) -> Result<T, CodecError> {
        if self.event_type() != T::TYPE {
            return Err(CodecError::UnexpectedType {
                expected: T::TYPE,
                found: self.event_type().chars().take(256).collect(),
            });
        }
        codec.decode(self.data())
    }
}

impl Envelope {
    /// Starts an envelope for a typed event: `type` from [`Event::TYPE`], payload and
    /// `datacontenttype` from `codec`, trace context continued from the current task
    /// ([`EnvelopeBuilder::current_metadata`]).
    ///
    /// ```
    /// use archon_events::{Envelope, Event, JsonCodec};
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Ping;
    /// impl Event for Ping { const TYPE: &'static str = "com.example.ping.v1"; }
    /// let env = Envelope::event("/a", &Ping, &JsonCodec)?.partition_key("k").build()?;
    /// assert_eq!(env.event_type(), "com.example.ping.v1");
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn event<T: Event, C: Codec<T>>(
        source: impl Into<String>,
        value: &T,
        codec: &C,
    ) -> Result<EnvelopeBuilder, CodecError> {
        let data = codec.encode(value)?;
        Ok(Self::builder(source, T::TYPE)
            .data(codec.content_type(), data)
            .current_metadata())
    }
}

/// Protobuf via prost (feature `protobuf`), `application/protobuf`.
///
/// ```
/// use archon_events::{Codec, ProstCodec};
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Ping { #[prost(uint64, tag = "1")] n: u64 }
/// let bytes = ProstCodec.encode(&Ping { n: 7 })?;
/// let back: Ping = ProstCodec.decode(&bytes)?;
/// assert_eq!(back, Ping { n: 7 });
/// assert!(<ProstCodec as Codec<Ping>>::decode(&ProstCodec, &[0xff]).is_err());
/// # Ok::<(), archon_events::CodecError>(())
/// ```
#[cfg(feature = "protobuf")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProstCodec;

#[cfg(feature = "protobuf")]
impl<T> Codec<T> for ProstCodec
where
    T: prost::Message + Default,
{
    fn content_type(&self) -> &'static str {
        "application/protobuf"
    }
    fn encode(&self, value: &T) -> Result<Bytes, CodecError> {
        Ok(Bytes::from(value.encode_to_vec()))
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        T::decode(bytes).map_err(|e| CodecError::Decode {
            ty: std::any::type_name::<T>(),
            source: e.into(),
        })
    }
}
