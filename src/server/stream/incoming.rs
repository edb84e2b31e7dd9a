//! The server's receiving side of a stream.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::{send_out, stop_status, StreamIo};
use crate::codec::{decode_body, decompress, Compression, Encoding, Flags};
use crate::context::Context;
use crate::status::Status;

/// The client's messages of a stream, as raw bytes (body encoding 1),
/// decompressed: an iterator that blocks until the next message comes,
/// and ends after the client's END.
///
/// An item is an error once the stream can go no further: cancelled,
/// past its deadline, its connection gone, or a message that breaks the
/// stream (over the body limit: `RESOURCE_EXHAUSTED`; in the wrong
/// encoding or corrupt: `INVALID_ARGUMENT`). The stream has then ended
/// and the iterator yields nothing more; the handler should return.
/// Taking a message grants its bytes back to the client's window.
///
/// # Examples
///
/// ```
/// use syncrpc::server::RawIncoming;
/// use syncrpc::{Context, Service, Status};
///
/// // Answers how many bytes the client sent.
/// fn measure(_ctx: &Context, msgs: RawIncoming) -> Result<bytes::Bytes, Status> {
///     let mut total = 0u64;
///     for msg in msgs {
///         total += msg?.len() as u64;
///     }
///     Ok(bytes::Bytes::from(total.to_string()))
/// }
///
/// let svc = Service::new("blob.Blob").raw_client_stream("Measure", measure);
/// # let _ = svc;
/// ```
pub struct RawIncoming {
    io: StreamIo,
    ctx: Context,
    encoding: Encoding,
    /// The iterator has yielded its last item.
    done: bool,
}

impl RawIncoming {
    pub(crate) fn new(io: StreamIo, ctx: &Context, encoding: Encoding) -> RawIncoming {
        RawIncoming {
            io,
            ctx: ctx.clone(),
            encoding,
            done: false,
        }
    }

    /// The stream's context: its deadline, metadata and cancellation.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Waits for the next message: `None` after the client's END.
    fn take(&mut self) -> Option<Result<(Flags, Bytes), Status>> {
        let shared = &self.io.shared;
        let mut s = shared.lock();
        loop {
            if let Some(status) = stop_status(&s, &self.ctx) {
                return Some(Err(status));
            }
            if let Some((flags, body)) = s.inbound.pop_front() {
                let grant = if s.flow_control {
                    s.recv
                        .consumed(u32::try_from(body.len()).unwrap_or(u32::MAX))
                } else {
                    None
                };
                drop(s);
                if let Some(grant) = grant {
                    let id = self.io.id;
                    let live = self.io.with_live_conn(|st| {
                        st.protocol.write_window(&mut st.out, id, grant);
                    });
                    if live {
                        send_out(&self.io.conn);
                    }
                }
                return Some(Ok((flags, body)));
            }
            if s.client_ended {
                return None;
            }
            s = shared.wait(s, self.ctx.deadline());
        }
    }

    /// Checks a message's flags and inflates it; a bad one ends the
    /// stream.
    fn open(&self, flags: Flags, body: Bytes) -> Result<Bytes, Status> {
        let fail = |status: Status| {
            self.io.fail(&self.ctx, status.clone());
            status
        };
        let encoding = flags.encoding().map_err(|v| {
            fail(Status::unimplemented(format!(
                "body encoding {v} is reserved"
            )))
        })?;
        if encoding != self.encoding {
            return Err(fail(Status::invalid_argument(format!(
                "{} takes {} messages, got {}",
                self.ctx.method(),
                encoding_name(self.encoding),
                encoding_name(encoding)
            ))));
        }
        match flags.compression() {
            Ok(Compression::None) => Ok(body),
            Ok(c) => decompress(c, &body, self.io.max_body)
                .map(Bytes::from)
                .map_err(|e| fail(e.to_status())),
            Err(v) => Err(fail(Status::unimplemented(format!(
                "compression {v} is reserved"
            )))),
        }
    }

    /// The next message, decoded by `decode`; a message it refuses ends
    /// the stream with its status.
    fn next_with<T>(
        &mut self,
        decode: impl FnOnce(&Bytes, usize) -> Result<T, Status>,
    ) -> Option<Result<T, Status>> {
        if self.done {
            return None;
        }
        let item = match self.take() {
            None => {
                self.done = true;
                return None;
            }
            Some(Err(status)) => Err(status),
            Some(Ok((flags, body))) => self.open(flags, body).and_then(|body| {
                decode(&body, self.io.max_depth).map_err(|status| {
                    let status = Status::invalid_argument(format!(
                        "cannot decode a message of {}: {}",
                        self.ctx.method(),
                        status.message()
                    ));
                    self.io.fail(&self.ctx, status.clone());
                    status
                })
            }),
        };
        self.done = item.is_err();
        Some(item)
    }
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::MsgPack => "MessagePack (encoding 0)",
        Encoding::Raw => "raw (encoding 1)",
    }
}

impl Iterator for RawIncoming {
    type Item = Result<Bytes, Status>;

    fn next(&mut self) -> Option<Result<Bytes, Status>> {
        self.next_with(|body, _| Ok(body.clone()))
    }
}

impl fmt::Debug for RawIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawIncoming")
            .field("id", &self.io.id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// The client's messages of a stream, each decoded from MessagePack into
/// `T`: an iterator that blocks until the next message comes and ends
/// after the client's END; errors as for [`RawIncoming`].
///
/// # Examples
///
/// ```
/// use syncrpc::server::Incoming;
/// use syncrpc::{Context, Service, Status};
///
/// #[derive(serde::Deserialize)]
/// struct Value { v: i64 }
/// #[derive(serde::Serialize)]
/// struct Total { sum: i64, count: u64 }
///
/// fn sum(_ctx: &Context, msgs: Incoming<Value>) -> Result<Total, Status> {
///     let mut total = Total { sum: 0, count: 0 };
///     for msg in msgs {
///         total.sum += msg?.v;
///         total.count += 1;
///     }
///     Ok(total)
/// }
///
/// let svc = Service::new("echo.Echo").client_stream("Sum", sum);
/// # let _ = svc;
/// ```
pub struct Incoming<T> {
    raw: RawIncoming,
    _type: PhantomData<fn() -> T>,
}

impl<T> Incoming<T> {
    pub(crate) fn new(raw: RawIncoming) -> Incoming<T> {
        Incoming {
            raw,
            _type: PhantomData,
        }
    }

    /// The stream's context: its deadline, metadata and cancellation.
    pub fn context(&self) -> &Context {
        self.raw.context()
    }
}

impl<T: DeserializeOwned> Iterator for Incoming<T> {
    type Item = Result<T, Status>;

    fn next(&mut self) -> Option<Result<T, Status>> {
        self.raw.next_with(|body, depth| decode_body(body, depth))
    }
}

impl<T> fmt::Debug for Incoming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.raw, f)
    }
}
