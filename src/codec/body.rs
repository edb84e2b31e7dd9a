//! Typed bodies: MessagePack values written by `rmp-serde`, structs as maps
//! keyed by field name (`docs/protocol.md`, "Body"), read back through the
//! structural check.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::msgpack;
use crate::status::Status;

/// The deepest nesting a request or response body may have by default.
pub const DEFAULT_MAX_BODY_DEPTH: usize = 128;

/// Serializes `value` as one MessagePack value, appending to `out`; structs
/// become maps keyed by field name.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::{decode_body, encode_body};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Say { text: String }
///
/// let mut out = Vec::new();
/// encode_body(&Say { text: "hi".into() }, &mut out).unwrap();
/// assert_eq!(out, b"\x81\xa4text\xa2hi");
/// let back: Say = decode_body(&out, 128).unwrap();
/// assert_eq!(back.text, "hi");
/// ```
pub fn encode_body<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Status> {
    rmp_serde::encode::write_named(out, value)
        .map_err(|e| Status::internal(format!("cannot encode body: {e}")))
}

/// Deserializes a MessagePack body after checking its structure (nesting at
/// most `max_depth`, no declared length past the end, no trailing bytes).
/// Structs are read from maps or arrays. Errors are `INVALID_ARGUMENT`.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, Status> {
    msgpack::check(bytes, max_depth)
        .map_err(|e| Status::invalid_argument(format!("invalid body: {e}")))?;
    rmp_serde::from_slice(bytes).map_err(|e| Status::invalid_argument(format!("invalid body: {e}")))
}
