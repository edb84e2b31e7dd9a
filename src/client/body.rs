//! A call's bodies, unary or stream: the per-thread buffer a request is
//! encoded into, and the decompression of what the server sends within the
//! body limit.

use std::borrow::Cow;
use std::cell::RefCell;

use serde::Serialize;

use crate::codec::{self, Compression, DecompressError, Flags};
use crate::error::{Error, ErrorKind, Execution};
use crate::status::Status;

thread_local! {
    /// A serialization buffer per thread, so a typed call does not allocate
    /// one for its body.
    static BODY_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Serialization buffers that grew past this are not kept.
const BODY_BUF_KEEP: usize = 64 * 1024;

pub(super) fn with_body_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    // Taken out rather than borrowed: a nested call on the same thread
    // (from a Serialize impl, say) gets a fresh buffer instead of a panic.
    let mut buf = BODY_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= BODY_BUF_KEEP {
        BODY_BUF.with(|b| *b.borrow_mut() = buf);
    }
    r
}

pub(super) fn encode_request<Req: Serialize + ?Sized>(
    req: &Req,
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    codec::encode_body(req, buf).map_err(|s| {
        Error::new(
            ErrorKind::Codec,
            Status::internal(format!("cannot encode the request: {}", s.message())),
        )
        .with_execution(Execution::NotRun)
    })
}

/// A body from the server, `what` (`"the response"`) of `method`,
/// decompressed within `limit` as its flags say.
pub(super) fn inflate<'r>(
    method: &str,
    what: &str,
    flags: Flags,
    body: &'r [u8],
    limit: usize,
) -> Result<Cow<'r, [u8]>, Error> {
    let compression = flags.compression().map_err(|bits| {
        peer_error(
            Status::internal(format!("{method}: {what} uses reserved compression {bits}")),
            Execution::Ran,
        )
    })?;
    if compression == Compression::None {
        return Ok(Cow::Borrowed(body));
    }
    codec::decompress(compression, body, limit)
        .map(Cow::Owned)
        .map_err(|e| {
            let status = match e {
                DecompressError::TooLarge { .. } => {
                    Status::resource_exhausted(format!("{method}: {what} {e}"))
                }
                DecompressError::Corrupt(_) => {
                    Status::data_loss(format!("{method}: {what} has a {e}"))
                }
            };
            peer_error(status, Execution::Ran)
        })
}

/// An error caused by what the server sent.
pub(super) fn peer_error(status: Status, execution: Execution) -> Error {
    Error::new(ErrorKind::Protocol, status).with_execution(execution)
}
