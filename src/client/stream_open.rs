//! The [`Client`]'s methods that open streams: typed (MessagePack) and
//! raw, each with and without per-call options. The handles they return
//! are in [`super::stream`].

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::body::with_body_buf;
use super::stream::{ClientStream, ServerStream, StreamReceiver, StreamSender};
use super::stream_call::{decode_msgpack, decode_raw, encode_msgpack, encode_raw, StreamCall};
use super::{CallOptions, Client};
use crate::codec::Encoding;
use crate::context::Context;
use crate::error::Error;

impl Client {
    /// Opens a server stream on `method` (`/service/method`): sends `req`
    /// as its one MessagePack message, and returns the iterator of the
    /// server's messages, decoded as `Resp`. The deadline is `ctx`'s,
    /// capped by the client's default timeout, and bounds the whole
    /// stream.
    ///
    /// # Errors
    ///
    /// Only errors before the stream opened: `UNAVAILABLE` if no server
    /// could be reached, `DEADLINE_EXCEEDED` or `CANCELLED` if `ctx` ended
    /// first, a usage error for a malformed method name or a client that
    /// speaks MessagePack-RPC. The server's answer comes from the iterator.
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
    /// let ticks = client.server_stream::<_, Tick>(
    ///     &Context::background(), "/echo.Echo/Count", &Count { n: 5, ms: 0 })?;
    /// let ticks: Vec<Tick> = ticks.collect::<Result<_, _>>()?;
    /// assert_eq!(ticks.len(), 5);
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn server_stream<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
        req: &Req,
    ) -> Result<ServerStream<Resp>, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.server_stream_with(ctx, method, req, &CallOptions::new())
    }

    /// [`Client::server_stream`] with per-call options: timeout, metadata,
    /// compression, trace id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use syncrpc::client::{CallOptions, Client};
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let opts = CallOptions::new()
    ///     .timeout(Duration::from_secs(30))
    ///     .metadata("tenant", "acme");
    /// for event in client.server_stream_with::<_, String>(
    ///     &Context::background(), "/feed.Feed/Watch", "orders", &opts)?
    /// {
    ///     println!("{}", event?);
    /// }
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn server_stream_with<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<ServerStream<Resp>, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let call = with_body_buf(|buf| {
            encode_msgpack(req, buf)?;
            StreamCall::open(self, ctx, method, Encoding::MsgPack, opts, Some(buf))
        })?;
        Ok(StreamReceiver::new(call, decode_msgpack::<Resp>))
    }

    /// [`Client::server_stream_with`] with raw bytes (encoding 1) both
    /// ways: `body` is the request, each item a message as the server sent
    /// it (decompressed).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::{CallOptions, Client};
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let mut file = Vec::new();
    /// for chunk in client.raw_server_stream(
    ///     &Context::background(), "/blob.Store/Get", b"key", &CallOptions::new())?
    /// {
    ///     file.extend_from_slice(&chunk?);
    /// }
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn raw_server_stream(
        &self,
        ctx: &Context,
        method: &str,
        body: &[u8],
        opts: &CallOptions,
    ) -> Result<ServerStream<Bytes>, Error> {
        let call = StreamCall::open(self, ctx, method, Encoding::Raw, opts, Some(body))?;
        Ok(StreamReceiver::new(call, decode_raw))
    }

    /// Opens a client stream on `method`: send MessagePack messages with
    /// [`ClientStream::send`], then [`ClientStream::finish`] for the
    /// server's one response, decoded as `Resp`.
    ///
    /// # Errors
    ///
    /// As [`Client::server_stream`]: only errors before the stream opened.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::Client;
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let mut lines = client.client_stream::<str, u64>(&Context::background(), "/log.Log/Append")?;
    /// lines.send("first")?;
    /// lines.send("second")?;
    /// let stored = lines.finish()?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn client_stream<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
    ) -> Result<ClientStream<Req, Resp>, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.client_stream_with(ctx, method, &CallOptions::new())
    }

    /// [`Client::client_stream`] with per-call options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::{CallOptions, Client};
    /// use syncrpc::codec::Compression;
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let opts = CallOptions::new().compression(Compression::Gzip);
    /// let mut lines = client.client_stream_with::<str, u64>(
    ///     &Context::background(), "/log.Log/Append", &opts)?;
    /// lines.send("compressed once long enough")?;
    /// lines.finish()?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn client_stream_with<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
        opts: &CallOptions,
    ) -> Result<ClientStream<Req, Resp>, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let (sender, receiver) = self.bidi_stream_with::<Req, Resp>(ctx, method, opts)?;
        Ok(ClientStream { sender, receiver })
    }

    /// [`Client::client_stream_with`] with raw bytes both ways.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::{CallOptions, Client};
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let mut upload = client.raw_client_stream(
    ///     &Context::background(), "/blob.Store/Put", &CallOptions::new())?;
    /// for chunk in [&b"abc"[..], b"def"] {
    ///     upload.send(chunk)?;
    /// }
    /// let receipt = upload.finish()?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn raw_client_stream(
        &self,
        ctx: &Context,
        method: &str,
        opts: &CallOptions,
    ) -> Result<ClientStream<[u8], Bytes>, Error> {
        let (sender, receiver) = self.raw_bidi_stream(ctx, method, opts)?;
        Ok(ClientStream { sender, receiver })
    }

    /// Opens a bidirectional stream on `method`, split into its sending
    /// and receiving halves, which two threads may use at once. Messages
    /// are MessagePack both ways.
    ///
    /// The stream is cancelled when both halves are dropped before it
    /// ended; dropping only the sender sends END.
    ///
    /// # Errors
    ///
    /// As [`Client::server_stream`]: only errors before the stream opened.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::thread;
    /// use syncrpc::client::Client;
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let (mut tx, rx) = client.bidi_stream::<str, String>(&Context::background(), "/echo.Echo/Chat")?;
    /// let writer = thread::spawn(move || -> Result<(), syncrpc::Error> {
    ///     for word in ["a", "b", "c"] {
    ///         tx.send(word)?;
    ///     }
    ///     tx.finish()
    /// });
    /// for echoed in rx {
    ///     println!("{}", echoed?);
    /// }
    /// writer.join().unwrap()?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn bidi_stream<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
    ) -> Result<(StreamSender<Req>, StreamReceiver<Resp>), Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.bidi_stream_with(ctx, method, &CallOptions::new())
    }

    /// [`Client::bidi_stream`] with per-call options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use syncrpc::client::{CallOptions, Client};
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let opts = CallOptions::new().timeout(Duration::from_secs(60));
    /// let (mut tx, mut rx) = client.bidi_stream_with::<str, String>(
    ///     &Context::background(), "/echo.Echo/Chat", &opts)?;
    /// tx.send("ping")?;
    /// println!("{:?}", rx.next());
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn bidi_stream_with<Req, Resp>(
        &self,
        ctx: &Context,
        method: &str,
        opts: &CallOptions,
    ) -> Result<(StreamSender<Req>, StreamReceiver<Resp>), Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let call = StreamCall::open(self, ctx, method, Encoding::MsgPack, opts, None)?;
        Ok((
            StreamSender::new(call.clone(), encode_msgpack::<Req>),
            StreamReceiver::new(call, decode_msgpack::<Resp>),
        ))
    }

    /// [`Client::bidi_stream_with`] with raw bytes both ways.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use syncrpc::client::{CallOptions, Client};
    /// use syncrpc::Context;
    ///
    /// let client = Client::connect("127.0.0.1:7000")?;
    /// let (mut tx, mut rx) = client.raw_bidi_stream(
    ///     &Context::background(), "/pipe.Pipe/Run", &CallOptions::new())?;
    /// tx.send(b"\x01\x02")?;
    /// let first = rx.next().transpose()?;
    /// # Ok::<(), syncrpc::Error>(())
    /// ```
    pub fn raw_bidi_stream(
        &self,
        ctx: &Context,
        method: &str,
        opts: &CallOptions,
    ) -> Result<(StreamSender<[u8]>, StreamReceiver<Bytes>), Error> {
        let call = StreamCall::open(self, ctx, method, Encoding::Raw, opts, None)?;
        Ok((
            StreamSender::new(call.clone(), encode_raw),
            StreamReceiver::new(call, decode_raw),
        ))
    }
}
