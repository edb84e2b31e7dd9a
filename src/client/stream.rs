//! Streaming calls (`docs/protocol.md`, "Streams"): a server stream read as
//! an iterator, a client stream written with blocking sends, and a
//! bidirectional stream split into a sender and a receiver.
//!
//! A stream runs on one connection, multiplexed with unary calls and other
//! streams. Each direction is flow controlled: the server may send up to
//! 256 KiB of messages ahead of what this side has read (the connection's
//! IO thread queues them and never waits), and [`StreamSender::send`]
//! blocks while the server has not granted room for more.
//!
//! Deadlines, cancellation, metadata, compression and trace ids work as for
//! unary calls: the deadline (the context's, the options', the client's
//! default) bounds the whole stream, and when it passes, or the context is
//! cancelled, the stream fails here and the server is sent CANCEL. Dropping
//! every handle of a stream before it ended cancels it too. Each message is
//! compressed on its own, once it is at least the compression threshold.
//!
//! Errors say whether the stream may have run, as unary calls' do: a stream
//! refused before its REQUEST went out, or on a connection that got GOAWAY,
//! or answered UNAVAILABLE before any message, did not run
//! ([`Execution::NotRun`](crate::Execution::NotRun)); a stream whose
//! connection broke may have. A stream is never retried once its REQUEST
//! was sent.
//!
//! MessagePack-RPC has no streams: a client speaking it refuses them with a
//! usage error.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use super::body::with_body_buf;
use super::options::Response;
use super::stream_call::{no_response, DecodeFn, EncodeFn, Recv, StreamCall};
use super::stream_state::Failure;
use crate::error::{Error, ErrorKind, Execution};
use crate::metadata::Metadata;
use crate::status::Status;
use crate::trace::TraceId;

/// The responses of a server stream, in the order the server sent them.
///
/// A server stream is the receiving half of a stream whose one request
/// went out when it was opened; see [`Client::server_stream`](super::Client::server_stream).
pub type ServerStream<T> = StreamReceiver<T>;

/// The receiving half of a stream: an iterator of the server's messages.
///
/// Each item is one message, decoded as `T` (MessagePack), or as it came
/// for [`Bytes`](bytes::Bytes) from the raw variants. After the last message the
/// iterator returns `None` if the server ended the stream with OK, or
/// yields one `Err` with the final status and then `None`. The same holds
/// when the stream fails here (deadline, cancellation, a broken
/// connection): one `Err`, then `None`.
///
/// `next` blocks until a message arrives, the stream ends or its deadline
/// passes. Reading a message frees its bytes in the stream's window: this
/// side grants them back to the server, so a slow reader slows the server
/// down rather than buffering without bound.
///
/// A receiver is `Send`: it may be read on another thread than the one
/// that sends. Dropping it before the end cancels the stream unless its
/// [`StreamSender`] is still alive.
///
/// # Examples
///
/// ```no_run
/// use syncrpc::client::Client;
/// use syncrpc::Context;
///
/// #[derive(serde::Serialize)]
/// struct Count { n: u32, ms: u64 }
/// #[derive(serde::Deserialize)]
/// struct Tick { i: u32 }
///
/// let client = Client::connect("127.0.0.1:7000")?;
/// let mut ticks = client.server_stream::<_, Tick>(
///     &Context::background(), "/echo.Echo/Count", &Count { n: 3, ms: 10 })?;
/// for tick in &mut ticks {
///     println!("tick {}", tick?.i);
/// }
/// println!("trailers: {:?}", ticks.metadata());
/// # Ok::<(), syncrpc::Error>(())
/// ```
pub struct StreamReceiver<T> {
    call: Arc<StreamCall>,
    decode: DecodeFn<T>,
    trailer: Option<Metadata>,
}

impl<T> StreamReceiver<T> {
    pub(super) fn new(call: Arc<StreamCall>, decode: DecodeFn<T>) -> StreamReceiver<T> {
        StreamReceiver {
            call,
            decode,
            trailer: None,
        }
    }

    /// The trailing metadata of the server's final RESPONSE, once the
    /// iterator reached the end; `None` before, or when the stream failed
    /// here.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let mut events = client.server_stream::<_, String>(
    ///     &Context::background(), "/feed.Feed/Watch", "topic")?;
    /// assert!(events.metadata().is_none());
    /// let all: Result<Vec<String>, _> = events.by_ref().collect();
    /// if let Some(md) = events.metadata() {
    ///     println!("cursor: {:?}", md.get_str("cursor"));
    /// }
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn metadata(&self) -> Option<&Metadata> {
        self.trailer.as_ref()
    }

    /// The trace id the stream runs under, when known: the one the server
    /// reported with its RESPONSE, else the one sent.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::{Context, TraceId};
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let ctx = Context::background().with_trace_id(TraceId::new("job-7").unwrap());
    /// let events = client.server_stream::<_, String>(&ctx, "/feed.Feed/Watch", "topic")?;
    /// assert_eq!(events.trace_id().unwrap().as_str(), "job-7");
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn trace_id(&self) -> Option<TraceId> {
        self.call.trace_id()
    }

    /// The address of the server the stream runs on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let events = client.server_stream::<_, String>(
    ///     &Context::background(), "/feed.Feed/Watch", "topic")?;
    /// println!("streaming from {}", events.peer());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn peer(&self) -> SocketAddr {
        self.call.peer()
    }

    /// Cancels the stream: the server is sent CANCEL unless the stream had
    /// ended. A [`StreamSender`] of the same stream fails from now on with
    /// `CANCELLED`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let mut events = client.server_stream::<_, String>(
    ///     &Context::background(), "/feed.Feed/Watch", "topic")?;
    /// let first = events.next();
    /// events.cancel(); // enough: the server stops sending
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn cancel(self) {
        self.call.cancel(cancelled(&self.call));
    }
}

impl<T> Iterator for StreamReceiver<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Result<T, Error>> {
        match self.call.recv() {
            Recv::Message(flags, body) => {
                Some((self.decode)(&self.call, flags, body).map_err(|e| self.call.fail_with(e)))
            }
            Recv::End(Ok(md)) => {
                self.trailer = Some(md);
                None
            }
            Recv::End(Err(e)) => {
                if e.is_status() {
                    self.trailer = Some(e.status().metadata().clone());
                }
                Some(Err(e))
            }
            Recv::Done => None,
        }
    }
}

impl<T> fmt::Debug for StreamReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReceiver")
            .field("method", &self.call.method())
            .field("peer", &self.call.peer())
            .field("ended", &self.call.is_ended())
            .finish_non_exhaustive()
    }
}

/// The sending half of a stream: sends the client's messages, then END.
///
/// [`StreamSender::send`] blocks while the stream's send window is
/// exhausted, until the server grants more room, and fails once the stream
/// ended (the server answered: its status is the error), was cancelled,
/// passed its deadline or lost its connection. [`StreamSender::finish`],
/// or dropping the sender, sends END: the client sends no more, and the
/// server goes on answering.
///
/// A sender is `Send`: it may be used on another thread than its
/// [`StreamReceiver`].
///
/// # Examples
///
/// ```no_run
/// use std::thread;
/// use syncrpc::client::Client;
/// use syncrpc::Context;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Line { text: String }
///
/// let client = Client::connect("127.0.0.1:7000")?;
/// let (mut tx, rx) = client.bidi_stream::<Line, Line>(&Context::background(), "/echo.Echo/Chat")?;
/// let reader = thread::spawn(move || {
///     for line in rx {
///         println!("{}", line?.text);
///     }
///     Ok::<(), syncrpc::Error>(())
/// });
/// for text in ["one", "two"] {
///     tx.send(&Line { text: text.into() })?;
/// }
/// tx.finish()?;
/// reader.join().unwrap()?;
/// # Ok::<(), syncrpc::Error>(())
/// ```
pub struct StreamSender<T: ?Sized> {
    call: Arc<StreamCall>,
    encode: EncodeFn<T>,
    finished: bool,
    _marker: PhantomData<fn(&T)>,
}

impl<T: ?Sized> StreamSender<T> {
    pub(super) fn new(call: Arc<StreamCall>, encode: EncodeFn<T>) -> StreamSender<T> {
        StreamSender {
            call,
            encode,
            finished: false,
            _marker: PhantomData,
        }
    }

    /// Sends one message, blocking while the send window is exhausted.
    ///
    /// # Errors
    ///
    /// The stream's final status once it ended (for a stream the server
    /// ended with OK, `FAILED_PRECONDITION`: the message was not sent);
    /// `DEADLINE_EXCEEDED` or `CANCELLED` once it passed its deadline or
    /// was cancelled; `UNAVAILABLE` once its connection broke; a usage
    /// error for a message over the body limit, which leaves the stream
    /// open.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let (mut tx, rx) = client.bidi_stream::<str, String>(&Context::background(), "/echo.Echo/Chat")?;
    /// tx.send("hello")?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn send(&mut self, msg: &T) -> Result<(), Error> {
        with_body_buf(|buf| {
            (self.encode)(msg, buf)?;
            self.call.send(buf)
        })
    }

    /// Sends END: no more messages. The stream goes on until the server
    /// ends it; its [`StreamReceiver`] reads the rest.
    ///
    /// # Errors
    ///
    /// `UNAVAILABLE` if the connection is gone (the receiver reports the
    /// stream's end).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let (mut tx, rx) = client.bidi_stream::<str, String>(&Context::background(), "/echo.Echo/Chat")?;
    /// tx.send("last words")?;
    /// tx.finish()?;
    /// let answers: Vec<String> = rx.collect::<Result<_, _>>()?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn finish(mut self) -> Result<(), Error> {
        self.finished = true;
        self.call.end()
    }

    /// Cancels the whole stream: the server is sent CANCEL unless the
    /// stream had ended, and the [`StreamReceiver`] ends with `CANCELLED`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let (tx, mut rx) = client.bidi_stream::<str, String>(&Context::background(), "/echo.Echo/Chat")?;
    /// tx.cancel();
    /// assert!(rx.next().unwrap().unwrap_err().is_cancelled());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn cancel(mut self) {
        self.finished = true;
        self.call.cancel(cancelled(&self.call));
    }

    /// The trace id the stream runs under, when known.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let (tx, _rx) = client.bidi_stream::<str, String>(&Context::background(), "/echo.Echo/Chat")?;
    /// println!("{:?}", tx.trace_id());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn trace_id(&self) -> Option<TraceId> {
        self.call.trace_id()
    }
}

impl<T: ?Sized> Drop for StreamSender<T> {
    fn drop(&mut self) {
        if !self.finished {
            // A half close: the receiver reads on.
            let _ = self.call.end();
        }
    }
}

impl<T: ?Sized> fmt::Debug for StreamSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("method", &self.call.method())
            .field("peer", &self.call.peer())
            .field("ended", &self.call.is_ended())
            .finish_non_exhaustive()
    }
}

/// A client stream: any number of requests, then one response.
///
/// [`ClientStream::send`] blocks while the send window is exhausted;
/// [`ClientStream::finish`] sends END and waits for the server's one
/// response. The server may end the stream early (it failed, or read all
/// it wanted): `send` then fails with its status. Dropping the stream
/// before it ended cancels it.
///
/// # Examples
///
/// ```no_run
/// use syncrpc::client::Client;
/// use syncrpc::Context;
///
/// #[derive(serde::Serialize)]
/// struct Value { v: i64 }
/// #[derive(serde::Deserialize)]
/// struct Sum { sum: i64, count: u64 }
///
/// let client = Client::connect("127.0.0.1:7000")?;
/// let mut stream = client.client_stream::<Value, Sum>(&Context::background(), "/echo.Echo/Sum")?;
/// for v in 1..=10 {
///     stream.send(&Value { v })?;
/// }
/// let total = stream.finish()?;
/// assert_eq!((total.sum, total.count), (55, 10));
/// # Ok::<(), syncrpc::Error>(())
/// ```
pub struct ClientStream<Req: ?Sized, Resp> {
    pub(super) sender: StreamSender<Req>,
    pub(super) receiver: StreamReceiver<Resp>,
}

impl<Req: ?Sized, Resp> ClientStream<Req, Resp> {
    /// Sends one message; see [`StreamSender::send`].
    ///
    /// # Errors
    ///
    /// As [`StreamSender::send`]: once the server answered early, its
    /// status.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let mut upload = client.client_stream::<[u8], u64>(&Context::background(), "/blob.Store/Put")?;
    /// upload.send(b"chunk")?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn send(&mut self, msg: &Req) -> Result<(), Error> {
        self.sender.send(msg)
    }

    /// Sends END and waits for the server's response.
    ///
    /// # Errors
    ///
    /// The server's status if it ended the stream with another than OK;
    /// `DEADLINE_EXCEEDED`, `CANCELLED` or `UNAVAILABLE` as for
    /// [`ClientStream::send`]; `INTERNAL` if the server sent no response or
    /// more than one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let mut upload = client.client_stream::<[u8], u64>(&Context::background(), "/blob.Store/Put")?;
    /// upload.send(b"chunk")?;
    /// let stored: u64 = upload.finish()?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn finish(self) -> Result<Resp, Error> {
        self.finish_response().map(Response::into_body)
    }

    /// [`ClientStream::finish`], returning the whole [`Response`]: the
    /// body, the trailing metadata, the trace id and the server.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let upload = client.client_stream::<[u8], u64>(&Context::background(), "/blob.Store/Put")?;
    /// let resp = upload.finish_response()?;
    /// println!("{} from {}, {:?}", resp.body(), resp.peer(), resp.metadata());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn finish_response(mut self) -> Result<Response<Resp>, Error> {
        self.sender.finished = true;
        // A failure to send END shows as the stream's end below.
        let _ = self.sender.call.end();
        let call = self.receiver.call.clone();
        let body = match self.receiver.next() {
            Some(Ok(body)) => body,
            Some(Err(e)) => return Err(e),
            None => return Err(no_response(call.method())),
        };
        match self.receiver.next() {
            None => Ok(Response::new(
                body,
                self.receiver.trailer.take().unwrap_or_default(),
                call.trace_id(),
                call.peer(),
            )),
            Some(Err(e)) => Err(e),
            Some(Ok(_)) => {
                let status = Status::internal(format!(
                    "{}: the server sent more than one response on a client stream",
                    call.method()
                ));
                Err(call.fail_with(
                    Error::new(ErrorKind::Protocol, status).with_execution(Execution::Ran),
                ))
            }
        }
    }

    /// Cancels the stream: the server is sent CANCEL unless it had ended.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let mut upload = client.client_stream::<[u8], u64>(&Context::background(), "/blob.Store/Put")?;
    /// upload.send(b"oops")?;
    /// upload.cancel(); // the server's handler sees its context cancelled
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn cancel(self) {
        self.receiver.call.cancel(cancelled(&self.receiver.call));
    }

    /// The trace id the stream runs under, when known.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let upload = client.client_stream::<[u8], u64>(&Context::background(), "/blob.Store/Put")?;
    /// println!("{:?}", upload.trace_id());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn trace_id(&self) -> Option<TraceId> {
        self.receiver.trace_id()
    }

    /// The address of the server the stream runs on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use syncrpc::client::Client;
    /// # use syncrpc::Context;
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let upload = client.client_stream::<[u8], u64>(&Context::background(), "/blob.Store/Put")?;
    /// println!("uploading to {}", upload.peer());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn peer(&self) -> SocketAddr {
        self.receiver.peer()
    }
}

impl<Req: ?Sized, Resp> Drop for ClientStream<Req, Resp> {
    fn drop(&mut self) {
        // Cancelled before the sender's drop would send END for nothing.
        self.sender.finished = true;
        if !self.receiver.call.is_ended() {
            self.receiver.call.cancel(cancelled(&self.receiver.call));
        }
    }
}

impl<Req: ?Sized, Resp> fmt::Debug for ClientStream<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStream")
            .field("method", &self.receiver.call.method())
            .field("peer", &self.receiver.call.peer())
            .field("ended", &self.receiver.call.is_ended())
            .finish_non_exhaustive()
    }
}

fn cancelled(call: &StreamCall) -> Failure {
    Failure::new(
        ErrorKind::Cancelled,
        Status::cancelled(format!("{}: the stream was cancelled", call.method())),
        Execution::MayHaveRun,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, Context};
    use bytes::Bytes;

    #[test]
    fn halves_are_send_and_streams_are_send() {
        fn check<T: Send + 'static>() {}
        check::<StreamSender<str>>();
        check::<StreamSender<[u8]>>();
        check::<StreamReceiver<String>>();
        check::<ClientStream<str, String>>();
        check::<ServerStream<Bytes>>();
    }

    #[test]
    fn a_msgpack_rpc_client_refuses_streams() {
        let client = Client::builder()
            .addr("127.0.0.1:1")
            .protocol(super::super::ClientProtocol::MsgpackRpc)
            .build()
            .unwrap();
        let err = client
            .server_stream::<_, String>(&Context::background(), "/a.B/c", "x")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
        assert!(err.is_not_run());
        assert!(
            err.to_string().contains("MessagePack-RPC has no streams"),
            "{err}"
        );
    }
}
