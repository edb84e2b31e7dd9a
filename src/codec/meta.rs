//! The meta section: one MessagePack map with string keys.
//!
//! Request, response and GOAWAY metas are plain serde structs written by
//! `rmp-serde` as maps keyed by field name. Request and response metas of
//! the usual shape are read in one pass by [`super::meta_scan`]; any other
//! shape takes the general path, which first runs the
//! structural check of [`super::msgpack`] (depth, declared lengths, trailing
//! bytes, duplicate keys), then lets `rmp-serde` fill the struct, borrowing
//! strings from the frame instead of copying them. Unknown keys are ignored,
//! nil for an optional key reads as absent, and an error names the key whose
//! value was wrong.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{meta_scan, msgpack};
use crate::metadata::Metadata;
use crate::status::{Code, Status};

/// The deepest nesting a meta map may have (`docs/protocol.md`, "Meta").
pub const MAX_META_DEPTH: usize = 32;
/// The longest `trace_id`, in bytes (`docs/protocol.md`, "Meta").
pub const MAX_TRACE_ID_LEN: usize = 64;
/// The largest flow-control window, and the largest grant one WINDOW frame
/// may carry: 2^31-1 bytes (`docs/protocol.md`, "Flow control").
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Why a meta section was rejected. The request is answered
/// `INVALID_ARGUMENT` and the connection stays open: the framing is intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaError(String);

impl MetaError {
    fn new(msg: impl fmt::Display) -> MetaError {
        MetaError(format!("invalid meta: {msg}"))
    }

    /// The `INVALID_ARGUMENT` status that answers the request.
    pub fn to_status(&self) -> Status {
        Status::invalid_argument(self.0.clone())
    }
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetaError {}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// Meta of a REQUEST or ONEWAY frame.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::RequestMeta;
///
/// let meta = RequestMeta { timeout_ms: 250, ..RequestMeta::new("/echo.Echo/Say") };
/// let bytes = meta.to_vec();
/// let back = RequestMeta::decode(&bytes).unwrap();
/// assert_eq!(back, meta);
/// assert_eq!(back.timeout_ms, 250);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta<'a> {
    /// Full method name, `/{service}/{method}`.
    #[serde(borrow, deserialize_with = "key::method")]
    pub method: &'a str,
    /// The caller's remaining budget in milliseconds; 0 means none.
    #[serde(
        default,
        deserialize_with = "key::timeout_ms",
        skip_serializing_if = "is_zero"
    )]
    pub timeout_ms: u32,
    /// The trace id, at most 64 bytes.
    #[serde(
        default,
        borrow,
        deserialize_with = "key::trace_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace_id: Option<&'a str>,
    /// Name of the calling service, for logs.
    #[serde(
        default,
        borrow,
        deserialize_with = "key::caller",
        skip_serializing_if = "Option::is_none"
    )]
    pub caller: Option<&'a str>,
    /// Application metadata.
    #[serde(
        default,
        deserialize_with = "key::md",
        skip_serializing_if = "Metadata::is_empty"
    )]
    pub md: Metadata,
    /// True if the REQUEST opens a stream rather than making a unary call
    /// (`docs/protocol.md`, "Streams"). Written only when true.
    #[serde(
        default,
        deserialize_with = "key::stream",
        skip_serializing_if = "is_false"
    )]
    pub stream: bool,
}

impl<'a> RequestMeta<'a> {
    /// A meta naming `method`, with nothing else set.
    pub fn new(method: &'a str) -> RequestMeta<'a> {
        RequestMeta {
            method,
            timeout_ms: 0,
            trace_id: None,
            caller: None,
            md: Metadata::new(),
            stream: false,
        }
    }

    /// Decodes and validates a request meta section.
    pub fn decode(bytes: &'a [u8]) -> Result<RequestMeta<'a>, MetaError> {
        match meta_scan::request(bytes) {
            Some(meta) => Ok(meta),
            None => decode_request_slow(bytes),
        }
    }

    /// Encodes the meta as a MessagePack map.
    pub fn to_vec(&self) -> Vec<u8> {
        to_vec(self)
    }
}

/// Meta of a RESPONSE frame.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::ResponseMeta;
/// use syncrpc::Code;
///
/// let meta = ResponseMeta { message: Some("unknown method"), ..ResponseMeta::new(Code::UNIMPLEMENTED) };
/// let bytes = meta.to_vec();
/// let back = ResponseMeta::decode(&bytes).unwrap();
/// assert_eq!(back.code(), Code::UNIMPLEMENTED);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMeta<'a> {
    /// Status code number, see [`Code`].
    #[serde(deserialize_with = "key::code")]
    pub code: u32,
    /// Human-readable error text.
    #[serde(
        default,
        borrow,
        deserialize_with = "key::message",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<&'a str>,
    /// The trace id the request ran under.
    #[serde(
        default,
        borrow,
        deserialize_with = "key::trace_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace_id: Option<&'a str>,
    /// Application metadata from the handler.
    #[serde(
        default,
        deserialize_with = "key::md",
        skip_serializing_if = "Metadata::is_empty"
    )]
    pub md: Metadata,
}

impl<'a> ResponseMeta<'a> {
    /// A meta with `code` and nothing else.
    pub fn new(code: Code) -> ResponseMeta<'a> {
        ResponseMeta {
            code: code.as_u32(),
            message: None,
            trace_id: None,
            md: Metadata::new(),
        }
    }

    /// The status code.
    pub fn code(&self) -> Code {
        Code::from(self.code)
    }

    /// Decodes and validates a response meta section.
    pub fn decode(bytes: &'a [u8]) -> Result<ResponseMeta<'a>, MetaError> {
        match meta_scan::response(bytes) {
            Some(meta) => Ok(meta),
            None => decode_response_slow(bytes),
        }
    }

    /// Encodes the meta as a MessagePack map.
    pub fn to_vec(&self) -> Vec<u8> {
        to_vec(self)
    }

    /// The [`Status`] this meta describes (code, message, metadata).
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.message.unwrap_or_default()).with_metadata(self.md.clone())
    }
}

/// Meta of a GOAWAY frame.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::GoawayMeta;
/// use syncrpc::Code;
///
/// let meta = GoawayMeta::new(Code::UNAVAILABLE, "server shutting down");
/// assert_eq!(GoawayMeta::decode(&meta.to_vec()).unwrap(), meta);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoawayMeta<'a> {
    /// Status code number, see [`Code`].
    #[serde(deserialize_with = "key::code")]
    pub code: u32,
    /// Why the server is going away.
    #[serde(default, borrow, deserialize_with = "key::goaway_message")]
    pub message: &'a str,
}

impl<'a> GoawayMeta<'a> {
    /// A GOAWAY meta with `code` and `message`.
    pub fn new(code: Code, message: &'a str) -> GoawayMeta<'a> {
        GoawayMeta {
            code: code.as_u32(),
            message,
        }
    }

    /// The status code.
    pub fn code(&self) -> Code {
        Code::from(self.code)
    }

    /// Decodes and validates a GOAWAY meta section.
    pub fn decode(bytes: &'a [u8]) -> Result<GoawayMeta<'a>, MetaError> {
        decode_map(bytes)
    }

    /// Encodes the meta as a MessagePack map.
    pub fn to_vec(&self) -> Vec<u8> {
        to_vec(self)
    }
}

/// Meta of a WINDOW frame: `{"bytes": n}`, a grant of `n` more bytes of
/// MESSAGE bodies on one stream. `n` is from 1 to [`MAX_WINDOW`]; a value
/// of this type always is.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::{WindowMeta, MAX_WINDOW};
///
/// let grant = WindowMeta::new(65536).unwrap();
/// assert_eq!(grant.to_vec(), b"\x81\xa5bytes\xce\x00\x01\x00\x00");
/// assert_eq!(WindowMeta::decode(&grant.to_vec()), Ok(grant));
/// assert!(WindowMeta::new(0).is_none());
/// assert!(WindowMeta::new(MAX_WINDOW + 1).is_none());
/// assert_eq!(
///     WindowMeta::decode(b"\x81\xa5bytes\x00").unwrap_err().to_string(),
///     "invalid meta: key `bytes`: invalid value: integer `0`, expected an integer from 1 to 2147483647"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowMeta {
    #[serde(deserialize_with = "key::window_bytes")]
    bytes: u32,
}

impl WindowMeta {
    /// A grant of `bytes`, or `None` unless it is from 1 to [`MAX_WINDOW`].
    pub fn new(bytes: u32) -> Option<WindowMeta> {
        (1..=MAX_WINDOW)
            .contains(&bytes)
            .then_some(WindowMeta { bytes })
    }

    /// The bytes granted, from 1 to [`MAX_WINDOW`].
    pub fn bytes(self) -> u32 {
        self.bytes
    }

    /// Decodes and validates a WINDOW meta section.
    pub fn decode(bytes: &[u8]) -> Result<WindowMeta, MetaError> {
        decode_map(bytes)
    }

    /// Encodes the meta as a MessagePack map.
    pub fn to_vec(&self) -> Vec<u8> {
        to_vec(self)
    }
}

/// Readers for the known keys. Each names its key in an error, so the peer
/// learns which value was wrong, and each optional key reads nil as absent:
/// MessagePack writers in other languages often send nil for an unset field.
mod key {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

    use crate::metadata::Metadata;

    fn named<T, E: de::Error>(key: &str, r: Result<T, E>) -> Result<T, E> {
        r.map_err(|e| E::custom(format_args!("key `{key}`: {e}")))
    }

    /// A MessagePack uint that fits in 32 bits, read from any integer
    /// marker, with an error that says what arrived instead.
    struct U32(u32);

    impl<'de> Deserialize<'de> for U32 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<U32, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = U32;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an unsigned integer of at most 4294967295")
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<U32, E> {
                    u32::try_from(v)
                        .map(U32)
                        .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<U32, E> {
                    u32::try_from(v)
                        .map(U32)
                        .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A MessagePack `str`, borrowed from the meta. A `bin` is refused
    /// even when its bytes are UTF-8: the protocol says `str`, and the
    /// one-pass reader of `meta_scan` takes nothing else either. (serde's
    /// own `&str` would take the bytes of a `bin`.)
    struct Str<'de>(&'de str);

    impl<'de> Deserialize<'de> for Str<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'de>, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Str<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a MessagePack str")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                    Ok(Str(v))
                }
            }
            d.deserialize_str(V)
        }
    }

    fn str_at<'de, D: Deserializer<'de>>(key: &str, d: D) -> Result<&'de str, D::Error> {
        named(key, Str::deserialize(d)).map(|s| s.0)
    }

    fn opt_str_at<'de, D: Deserializer<'de>>(
        key: &str,
        d: D,
    ) -> Result<Option<&'de str>, D::Error> {
        named(key, Option::<Str<'de>>::deserialize(d)).map(|s| s.map(|s| s.0))
    }

    pub(super) fn method<'de, D: Deserializer<'de>>(d: D) -> Result<&'de str, D::Error> {
        str_at("method", d)
    }

    pub(super) fn code<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        named("code", U32::deserialize(d)).map(|v| v.0)
    }

    pub(super) fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        named("timeout_ms", Option::<U32>::deserialize(d)).map(|v| v.map_or(0, |v| v.0))
    }

    pub(super) fn trace_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
        opt_str_at("trace_id", d)
    }

    pub(super) fn caller<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
        opt_str_at("caller", d)
    }

    pub(super) fn message<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
        opt_str_at("message", d)
    }

    pub(super) fn goaway_message<'de, D: Deserializer<'de>>(d: D) -> Result<&'de str, D::Error> {
        opt_str_at("message", d).map(Option::unwrap_or_default)
    }

    /// A boolean, nil read as false. Through `deserialize_any`, so that
    /// another type is reported as what it is.
    pub(super) fn stream<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
                Ok(v)
            }
            fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_none<E: de::Error>(self) -> Result<bool, E> {
                Ok(false)
            }
        }
        named("stream", d.deserialize_any(V))
    }

    /// A WINDOW grant: an integer from 1 to 2^31-1, from any integer
    /// marker.
    pub(super) fn window_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer from 1 to {}", super::MAX_WINDOW)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|v| (1..=super::MAX_WINDOW).contains(v))
                    .ok_or_else(|| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
        }
        named("bytes", d.deserialize_any(V))
    }

    pub(super) fn md<'de, D: Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
        named("md", Option::<Metadata>::deserialize(d)).map(Option::unwrap_or_default)
    }
}

/// The general request meta decoder, for every shape
/// [`meta_scan::request`] does not take.
pub(super) fn decode_request_slow(bytes: &[u8]) -> Result<RequestMeta<'_>, MetaError> {
    let meta: RequestMeta<'_> = decode_map(bytes)?;
    check_trace_id(meta.trace_id)?;
    Ok(meta)
}

/// The general response meta decoder, for every shape
/// [`meta_scan::response`] does not take.
pub(super) fn decode_response_slow(bytes: &[u8]) -> Result<ResponseMeta<'_>, MetaError> {
    let meta: ResponseMeta<'_> = decode_map(bytes)?;
    check_trace_id(meta.trace_id)?;
    Ok(meta)
}

fn check_trace_id(id: Option<&str>) -> Result<(), MetaError> {
    match id {
        Some(id) if id.len() > MAX_TRACE_ID_LEN => Err(MetaError::new(format_args!(
            "trace_id too long: {} > {MAX_TRACE_ID_LEN} bytes",
            id.len()
        ))),
        _ => Ok(()),
    }
}

/// Structural check first, then serde: serde never sees a value that could
/// recurse deeply or declare more than the section holds.
fn decode_map<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, MetaError> {
    msgpack::check(bytes, MAX_META_DEPTH).map_err(MetaError::new)?;
    msgpack::check_str_keys_unique(bytes).map_err(MetaError::new)?;
    rmp_serde::from_slice(bytes).map_err(MetaError::new)
}

pub(crate) fn to_vec<T: Serialize>(meta: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_to(&mut out, meta);
    out
}

/// Appends `meta` as a MessagePack map to `out`.
pub(crate) fn write_to<W: std::io::Write, T: Serialize>(out: &mut W, meta: &T) {
    // Serializing these structs cannot fail: every field is a string,
    // integer or string-keyed map, and the writers here are in memory.
    rmp_serde::encode::write_named(out, meta).expect("meta serialization is infallible");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"method": "/a.A/b", <key>: nil}`.
    fn with_nil(key: &str) -> Vec<u8> {
        let mut v = vec![0x82, 0xa6];
        v.extend_from_slice(b"method");
        v.push(0xa6);
        v.extend_from_slice(b"/a.A/b");
        v.push(0xa0 | key.len() as u8);
        v.extend_from_slice(key.as_bytes());
        v.push(0xc0);
        v
    }

    #[test]
    fn nil_reads_as_absent_for_every_optional_key() {
        for key in ["timeout_ms", "trace_id", "caller", "md", "stream"] {
            let bytes = with_nil(key);
            assert_eq!(
                RequestMeta::decode(&bytes),
                Ok(RequestMeta::new("/a.A/b")),
                "{key}"
            );
        }
        // {"code": 14, "message": nil, "trace_id": nil, "md": nil}
        let resp = b"\x84\xa4code\x0e\xa7message\xc0\xa8trace_id\xc0\xa2md\xc0";
        assert_eq!(
            ResponseMeta::decode(resp),
            Ok(ResponseMeta::new(Code::UNAVAILABLE))
        );
        // {"code": 14, "message": nil}
        let goaway = b"\x82\xa4code\x0e\xa7message\xc0";
        assert_eq!(
            GoawayMeta::decode(goaway),
            Ok(GoawayMeta::new(Code::UNAVAILABLE, ""))
        );
    }

    #[test]
    fn required_keys_reject_nil_and_errors_name_the_key() {
        // {"method": nil}
        let e = RequestMeta::decode(b"\x81\xa6method\xc0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid meta: key `method`: invalid type: unit value, expected a MessagePack str"
        );
        // {"code": -1}
        let e = ResponseMeta::decode(b"\x81\xa4code\xff").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid meta: key `code`: invalid value: integer `-1`, \
             expected an unsigned integer of at most 4294967295"
        );
        // {"code": "0"}
        let e = GoawayMeta::decode(b"\x81\xa4code\xa10").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid meta: key `code`: invalid type: string \"0\", \
             expected an unsigned integer of at most 4294967295"
        );
    }
}
