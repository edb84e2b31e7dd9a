//! [`service!`](crate::service!): a service's server trait, its
//! [`Service`](crate::Service) constructor, its typed client and its method
//! descriptors, from one declaration.

/// Declares a service once, typed on both sides.
///
/// ```
/// use bytes::Bytes;
/// use serde::{Deserialize, Serialize};
/// use syncrpc::{Context, Status};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// pub struct Say { pub text: String }
///
/// syncrpc::service! {
///     /// Says things back.
///     pub service Echo("echo.Echo") client EchoClient {
///         /// Answers the request unchanged.
///         unary Say => fn say(Say) -> Say;
///         /// Answers the bytes unchanged.
///         raw Bytes => fn bytes(Bytes) -> Bytes;
///         /// Takes a line to log; answers nothing.
///         oneway Log => fn log(Say);
///     }
/// }
///
/// struct Parrot;
///
/// impl Echo for Parrot {
///     fn say(&self, _ctx: &Context, req: Say) -> Result<Say, Status> {
///         Ok(req)
///     }
///     fn bytes(&self, _ctx: &Context, body: Bytes) -> Result<Bytes, Status> {
///         Ok(body)
///     }
///     fn log(&self, _ctx: &Context, req: Say) -> Result<(), Status> {
///         println!("{}", req.text);
///         Ok(())
///     }
/// }
///
/// let server = syncrpc::Server::builder()
///     .service(Parrot.into_service())
///     .bind("127.0.0.1:0")?;
///
/// let echo = EchoClient::connect(server.local_addr())?;
/// let ctx = Context::background();
/// let reply = echo.say(&ctx, &Say { text: "hi".into() })?;
/// assert_eq!(reply.text, "hi");
/// assert_eq!(&echo.bytes(&ctx, b"\x01\x02")?[..], b"\x01\x02");
/// echo.log(&ctx, &Say { text: "started".into() })?;
/// assert_eq!(EchoClient::Say.path(), "/echo.Echo/Say");
/// server.shutdown();
/// # Ok::<(), syncrpc::Error>(())
/// ```
///
/// # The declaration
///
/// ```text
/// $(#[attr])* VIS service TRAIT("SERVICE.NAME") client CLIENT {
///     $(#[attr])* KIND WireName => fn rust_name(Request) -> Response;
///     ...
/// }
/// ```
///
/// Each method starts with its kind:
///
/// | kind | server method | client method |
/// |---|---|---|
/// | `unary Name => fn name(Req) -> Resp;` | `fn name(&self, &Context, Req) -> Result<Resp, Status>` | `fn name(&self, &Context, &Req) -> Result<Resp, Error>` |
/// | `raw Name => fn name(Bytes) -> Bytes;` | `fn name(&self, &Context, Bytes) -> Result<Bytes, Status>` | `fn name(&self, &Context, &[u8]) -> Result<Bytes, Error>` |
/// | `oneway Name => fn name(Req);` | `fn name(&self, &Context, Req) -> Result<(), Status>` | `fn name(&self, &Context, &Req) -> Result<(), Error>` (a ONEWAY frame) |
/// | `server_stream Name => fn name(Req) -> Msg;` | `fn name(&self, &Context, Req, &Sink<Msg>) -> Result<(), Status>` | `fn name(&self, &Context, &Req) -> Result<ServerStream<Msg>, Error>` |
/// | `client_stream Name => fn name(Msg) -> Resp;` | `fn name(&self, &Context, Incoming<Msg>) -> Result<Resp, Status>` | `fn name(&self, &Context) -> Result<ClientStream<Msg, Resp>, Error>` |
/// | `bidi_stream Name => fn name(In) -> Out;` | `fn name(&self, &Context, Incoming<In>, &Sink<Out>) -> Result<(), Status>` | `fn name(&self, &Context) -> Result<(StreamSender<In>, StreamReceiver<Out>), Error>` |
///
/// `Name` is the method's name on the wire (`/SERVICE.NAME/Name`),
/// `name` the Rust method's on both sides. Typed bodies are MessagePack
/// of serde types; raw bodies are bytes passed through untouched, declared
/// as `bytes::Bytes` (in scope where the macro is called), the type a raw
/// handler takes and returns.
///
/// # Streams
///
/// The three streaming kinds take a [`Sink`](crate::server::Sink) to send
/// through and an [`Incoming`](crate::server::Incoming) iterator of the
/// client's messages on the server; on the client they return a
/// [`ServerStream`](crate::client::ServerStream) to iterate, a
/// [`ClientStream`](crate::client::ClientStream) to `send` into and
/// `finish`, or a [`StreamSender`](crate::client::StreamSender) and a
/// [`StreamReceiver`](crate::client::StreamReceiver) that two threads may
/// use at once. Each stream holds a server worker for its life.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use syncrpc::server::{Incoming, Sink};
/// use syncrpc::{Context, Status};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Count { pub n: u64 }
/// #[derive(Serialize, Deserialize)]
/// pub struct Tick { pub i: u64 }
///
/// syncrpc::service! {
///     pub service Counter("demo.Counter") client CounterClient {
///         /// Ticks 0 to n-1.
///         server_stream Count => fn count(Count) -> Tick;
///         /// The sum of the numbers sent.
///         client_stream Sum => fn sum(i64) -> i64;
///         /// Each number back, doubled, as it arrives.
///         bidi_stream Double => fn double(i64) -> i64;
///     }
/// }
///
/// struct Impl;
///
/// impl Counter for Impl {
///     fn count(&self, _: &Context, req: Count, sink: &Sink<Tick>) -> Result<(), Status> {
///         (0..req.n).try_for_each(|i| sink.send(&Tick { i }))
///     }
///     fn sum(&self, _: &Context, msgs: Incoming<i64>) -> Result<i64, Status> {
///         msgs.sum()
///     }
///     fn double(&self, _: &Context, mut msgs: Incoming<i64>, sink: &Sink<i64>) -> Result<(), Status> {
///         msgs.try_for_each(|v| sink.send(&(v? * 2)))
///     }
/// }
///
/// let server = syncrpc::Server::builder()
///     .service(Impl.into_service())
///     .bind("127.0.0.1:0")?;
/// let counter = CounterClient::connect(server.local_addr())?;
/// let ctx = Context::background();
///
/// for tick in counter.count(&ctx, &Count { n: 3 })? {
///     println!("tick {}", tick?.i);
/// }
///
/// let mut sum = counter.sum(&ctx)?;
/// for v in [1, 2, 3] {
///     sum.send(&v)?;
/// }
/// assert_eq!(sum.finish()?, 6);
///
/// let (mut tx, rx) = counter.double(&ctx)?;
/// let writer = std::thread::spawn(move || -> Result<(), syncrpc::Error> {
///     tx.send(&21)?;
///     tx.finish()
/// });
/// let doubled: Vec<i64> = rx.collect::<Result<_, _>>()?;
/// writer.join().unwrap()?;
/// assert_eq!(doubled, [42]);
/// server.shutdown();
/// # Ok::<(), syncrpc::Error>(())
/// ```
///
/// # What it generates
///
/// - `trait TRAIT: Send + Sync + 'static`, one method per RPC, for the
///   server to implement, with a provided
///   `fn into_service(self) -> Service`: the implementation as a
///   [`Service`](crate::Service), which takes today's per-service and
///   per-method options (`.timeout`, `.method_timeout(EchoClient::Say, ..)`,
///   `.filter`) before it is given to the server builder.
/// - `struct CLIENT`, a typed stub over a [`Client`](crate::Client)
///   (`CLIENT::new(client)`, `CLIENT::connect(addr)`), cheap to clone and
///   shared between threads like the client it wraps. Every call uses its
///   [`CallOptions`](crate::CallOptions) (`with_options`): timeout,
///   metadata, compression, trace id, retry policy. `invoke` and
///   `invoke_raw` call a method through its typed descriptor and return
///   the whole [`Response`](crate::client::Response) (response metadata,
///   trace id, peer).
/// - The method descriptors: `CLIENT::Name`, a typed
///   [`Method`](crate::descriptor::Method) per method, `CLIENT::METHODS`
///   (every [`MethodDescriptor`](crate::descriptor::MethodDescriptor)) and
///   `CLIENT::SERVICE` (the service's name). The built-in reflection
///   service reports them.
///
/// Names the generated items take for themselves: `into_service` on the
/// trait; `new`, `connect`, `with_options`, `client`, `options`, `invoke`,
/// `invoke_raw`, `SERVICE` and `METHODS` on the client. An RPC may not
/// reuse them, and its wire name must differ from its Rust name (the
/// client holds both).
///
/// # Typed on both sides
///
/// A method the service does not declare does not exist on the client:
///
/// ```compile_fail,E0599
/// # use syncrpc::Context;
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # pub struct Say { pub text: String }
/// syncrpc::service! {
///     pub service Echo("echo.Echo") client EchoClient {
///         unary Say => fn say(Say) -> Say;
///     }
/// }
/// # fn main() -> Result<(), syncrpc::Error> {
/// let echo = EchoClient::connect("127.0.0.1:7000")?;
/// let reply = echo.sya(&Context::background(), &Say { text: "hi".into() })?;
/// # Ok(()) }
/// ```
///
/// an answer is of the declared type only:
///
/// ```compile_fail,E0308
/// # use syncrpc::Context;
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # pub struct Say { pub text: String }
/// syncrpc::service! {
///     pub service Echo("echo.Echo") client EchoClient {
///         unary Say => fn say(Say) -> Say;
///     }
/// }
/// # fn main() -> Result<(), syncrpc::Error> {
/// let echo = EchoClient::connect("127.0.0.1:7000")?;
/// let reply: String = echo.say(&Context::background(), &Say { text: "hi".into() })?;
/// # Ok(()) }
/// ```
///
/// nor does a request of another type:
///
/// ```compile_fail,E0308
/// # use syncrpc::Context;
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # pub struct Say { pub text: String }
/// syncrpc::service! {
///     pub service Echo("echo.Echo") client EchoClient {
///         unary Say => fn say(Say) -> Say;
///     }
/// }
/// # fn main() -> Result<(), syncrpc::Error> {
/// let echo = EchoClient::connect("127.0.0.1:7000")?;
/// let reply = echo.say(&Context::background(), &"hi".to_owned())?;
/// # Ok(()) }
/// ```
///
/// The server's trait is checked the same way: an implementation that
/// answers another type does not compile.
///
/// ```compile_fail,E0053
/// # use syncrpc::{Context, Status};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # pub struct Say { pub text: String }
/// syncrpc::service! {
///     pub service Echo("echo.Echo") client EchoClient {
///         unary Say => fn say(Say) -> Say;
///     }
/// }
/// struct Parrot;
/// impl Echo for Parrot {
///     fn say(&self, _: &Context, req: Say) -> Result<String, Status> {
///         Ok(req.text)
///     }
/// }
/// ```
///
/// # JSON Schema
///
/// With the cargo feature `schemars`, a request or response type that
/// implements `schemars::JsonSchema` (usually by `#[derive(JsonSchema)]`)
/// has its JSON Schema in its descriptor, and reflection serves it;
/// other types have none. Without the feature no type has one.
#[macro_export]
macro_rules! service {
    (
        $(#[$attr:meta])*
        $vis:vis service $trait:ident ( $svc:literal ) client $client:ident {
            $(
                $(#[$mattr:meta])*
                $kind:ident $wire:ident => fn $method:ident ( $req:ty ) $(-> $resp:ty)? ;
            )*
        }
    ) => {
        $(#[$attr])*
        $vis trait $trait: ::core::marker::Send + ::core::marker::Sync + 'static {
            $(
                $crate::__service_method!(@trait $kind $wire [$(#[$mattr])*] $method ($req) [$($resp)?]);
            )*

            #[doc = concat!("This implementation as the service `", $svc, "`, ready for a")]
            #[doc = "server builder's `service` once its options (timeouts, filters) are set."]
            fn into_service(self) -> $crate::Service
            where
                Self: ::core::marker::Sized,
            {
                let this = ::std::sync::Arc::new(self);
                let _ = &this; // a service may declare no methods
                let service = $crate::Service::new($svc);
                $(
                    let service = $crate::__service_method!(
                        @register $kind $wire service this $client $method ($req) [$($resp)?]
                    );
                )*
                service
            }
        }

        #[doc = concat!("A typed client of the service `", $svc, "`, over a `syncrpc::Client`:")]
        #[doc = "cheap to clone, shared between threads."]
        #[derive(Clone, Debug)]
        $vis struct $client {
            client: $crate::Client,
            options: $crate::CallOptions,
        }

        #[allow(non_upper_case_globals, dead_code)]
        impl $client {
            #[doc = concat!("`", $svc, "`, the service's name.")]
            pub const SERVICE: &'static str = $svc;

            $(
                $crate::__service_method!(@const $kind $wire $svc $client ($req) [$($resp)?]);
            )*

            /// Every method's descriptor, in declaration order.
            pub const METHODS: &'static [$crate::descriptor::MethodDescriptor] =
                &[$(*$client::$wire.descriptor()),*];

            /// The stub over `client`, with no call options.
            pub fn new(client: $crate::Client) -> Self {
                $client {
                    client,
                    options: $crate::CallOptions::new(),
                }
            }

            /// The stub over a new client of the server at `addr`
            /// (`host:port`), as `Client::connect` makes it.
            pub fn connect(addr: impl ::std::string::ToString) -> ::core::result::Result<Self, $crate::Error> {
                $crate::Client::connect(addr).map(Self::new)
            }

            /// The same stub (sharing the client) with `options` for every call.
            pub fn with_options(&self, options: $crate::CallOptions) -> Self {
                $client {
                    client: self.client.clone(),
                    options,
                }
            }

            /// The untyped client underneath.
            pub fn client(&self) -> &$crate::Client {
                &self.client
            }

            /// The options every call uses.
            pub fn options(&self) -> &$crate::CallOptions {
                &self.options
            }

            /// Calls a typed method of this service and returns the whole
            /// response: body, response metadata, trace id and peer.
            pub fn invoke<Req, Resp>(
                &self,
                method: $crate::descriptor::Method<$client, Req, Resp>,
                ctx: &$crate::Context,
                req: &Req,
            ) -> ::core::result::Result<$crate::client::Response<Resp>, $crate::Error>
            where
                Req: $crate::__private::serde::Serialize,
                Resp: $crate::__private::serde::de::DeserializeOwned,
            {
                self.client.call_with(ctx, method.path(), req, &self.options)
            }

            /// Calls a raw method of this service and returns the whole
            /// response.
            pub fn invoke_raw(
                &self,
                method: $crate::descriptor::Method<
                    $client,
                    $crate::descriptor::RawBody,
                    $crate::descriptor::RawBody,
                >,
                ctx: &$crate::Context,
                body: &[u8],
            ) -> ::core::result::Result<$crate::client::Response<$crate::__private::Bytes>, $crate::Error> {
                self.client.call_raw(ctx, method.path(), body, &self.options)
            }

            $(
                $crate::__service_method!(@client $kind $wire [$(#[$mattr])*] $client $method ($req) [$($resp)?]);
            )*
        }
    };
}

/// One method of a [`service!`] declaration, per kind and per place it
/// appears. A new kind is a new set of arms here.
#[doc(hidden)]
#[macro_export]
macro_rules! __service_method {
    // The server trait's method.
    (@trait unary $wire:ident [$(#[$mattr:meta])*] $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        fn $method(&self, ctx: &$crate::Context, req: $req) -> ::core::result::Result<$resp, $crate::Status>;
    };
    (@trait raw $wire:ident [$(#[$mattr:meta])*] $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        fn $method(&self, ctx: &$crate::Context, body: $req) -> ::core::result::Result<$resp, $crate::Status>;
    };
    (@trait oneway $wire:ident [$(#[$mattr:meta])*] $method:ident ($req:ty) []) => {
        $(#[$mattr])*
        fn $method(&self, ctx: &$crate::Context, req: $req) -> ::core::result::Result<(), $crate::Status>;
    };
    (@trait server_stream $wire:ident [$(#[$mattr:meta])*] $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        fn $method(
            &self,
            ctx: &$crate::Context,
            req: $req,
            sink: &$crate::server::Sink<$resp>,
        ) -> ::core::result::Result<(), $crate::Status>;
    };
    (@trait client_stream $wire:ident [$(#[$mattr:meta])*] $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        fn $method(
            &self,
            ctx: &$crate::Context,
            msgs: $crate::server::Incoming<$req>,
        ) -> ::core::result::Result<$resp, $crate::Status>;
    };
    (@trait bidi_stream $wire:ident [$(#[$mattr:meta])*] $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        fn $method(
            &self,
            ctx: &$crate::Context,
            msgs: $crate::server::Incoming<$req>,
            sink: &$crate::server::Sink<$resp>,
        ) -> ::core::result::Result<(), $crate::Status>;
    };
    (@trait unary $wire:ident $attrs:tt $method:ident ($req:ty) []) => {
        ::core::compile_error!(concat!(
            "unary method ", stringify!($wire), " needs a response type: `-> Response`"
        ));
    };
    (@trait raw $wire:ident $attrs:tt $method:ident ($req:ty) []) => {
        ::core::compile_error!(concat!(
            "raw method ", stringify!($wire), " is declared `fn ", stringify!($method), "(Bytes) -> Bytes`"
        ));
    };
    (@trait oneway $wire:ident $attrs:tt $method:ident ($req:ty) [$resp:ty]) => {
        ::core::compile_error!(concat!(
            "oneway method ", stringify!($wire), " has no response: drop `-> ", stringify!($resp), "`"
        ));
    };
    (@trait server_stream $wire:ident $attrs:tt $method:ident ($req:ty) []) => {
        ::core::compile_error!(concat!(
            "server_stream method ", stringify!($wire), " needs a message type: `-> Message`"
        ));
    };
    (@trait client_stream $wire:ident $attrs:tt $method:ident ($req:ty) []) => {
        ::core::compile_error!(concat!(
            "client_stream method ", stringify!($wire), " needs a response type: `-> Response`"
        ));
    };
    (@trait bidi_stream $wire:ident $attrs:tt $method:ident ($req:ty) []) => {
        ::core::compile_error!(concat!(
            "bidi_stream method ", stringify!($wire), " needs a message type: `-> Message`"
        ));
    };
    (@trait $kind:ident $wire:ident $($rest:tt)*) => {
        ::core::compile_error!(concat!(
            "unknown method kind `", stringify!($kind), "` for ", stringify!($wire),
            ": expected unary, raw, oneway, server_stream, client_stream or bidi_stream"
        ));
    };

    // Its registration in `into_service`.
    (@register unary $wire:ident $service:ident $this:ident $client:ident $method:ident ($req:ty) [$resp:ty]) => {{
        let imp = ::std::sync::Arc::clone(&$this);
        $service
            .method(
                stringify!($wire),
                move |ctx: &$crate::Context, req: $req| -> ::core::result::Result<$resp, $crate::Status> {
                    imp.$method(ctx, req)
                },
            )
            .describe(*$client::$wire.descriptor())
    }};
    (@register raw $wire:ident $service:ident $this:ident $client:ident $method:ident ($req:ty) [$resp:ty]) => {{
        let imp = ::std::sync::Arc::clone(&$this);
        $service
            .raw_method(
                stringify!($wire),
                move |ctx: &$crate::Context, body: $req| -> ::core::result::Result<$resp, $crate::Status> {
                    imp.$method(ctx, body)
                },
            )
            .describe(*$client::$wire.descriptor())
    }};
    (@register oneway $wire:ident $service:ident $this:ident $client:ident $method:ident ($req:ty) []) => {{
        let imp = ::std::sync::Arc::clone(&$this);
        $service
            .method(
                stringify!($wire),
                move |ctx: &$crate::Context, req: $req| -> ::core::result::Result<(), $crate::Status> {
                    imp.$method(ctx, req)
                },
            )
            .describe(*$client::$wire.descriptor())
    }};
    (@register server_stream $wire:ident $service:ident $this:ident $client:ident $method:ident ($req:ty) [$resp:ty]) => {{
        let imp = ::std::sync::Arc::clone(&$this);
        $service
            .server_stream(
                stringify!($wire),
                move |ctx: &$crate::Context, req: $req, sink: &$crate::server::Sink<$resp>| {
                    imp.$method(ctx, req, sink)
                },
            )
            .describe(*$client::$wire.descriptor())
    }};
    (@register client_stream $wire:ident $service:ident $this:ident $client:ident $method:ident ($req:ty) [$resp:ty]) => {{
        let imp = ::std::sync::Arc::clone(&$this);
        $service
            .client_stream(
                stringify!($wire),
                move |ctx: &$crate::Context, msgs: $crate::server::Incoming<$req>| -> ::core::result::Result<$resp, $crate::Status> {
                    imp.$method(ctx, msgs)
                },
            )
            .describe(*$client::$wire.descriptor())
    }};
    (@register bidi_stream $wire:ident $service:ident $this:ident $client:ident $method:ident ($req:ty) [$resp:ty]) => {{
        let imp = ::std::sync::Arc::clone(&$this);
        $service
            .bidi_stream(
                stringify!($wire),
                move |ctx: &$crate::Context,
                      msgs: $crate::server::Incoming<$req>,
                      sink: &$crate::server::Sink<$resp>| {
                    imp.$method(ctx, msgs, sink)
                },
            )
            .describe(*$client::$wire.descriptor())
    }};
    (@register $($rest:tt)*) => {
        $crate::Service::new("")
    };

    // Its typed descriptor on the client.
    (@const unary $wire:ident $svc:literal $client:ident ($req:ty) [$resp:ty]) => {
        #[doc = concat!("`/", $svc, "/", stringify!($wire), "`: unary, `", stringify!($req), "` to `", stringify!($resp), "`.")]
        pub const $wire: $crate::descriptor::Method<$client, $req, $resp> =
            $crate::descriptor::Method::new($crate::descriptor::MethodDescriptor {
                service: $svc,
                name: stringify!($wire),
                path: concat!("/", $svc, "/", stringify!($wire)),
                kind: $crate::descriptor::MethodKind::Unary,
                body: $crate::descriptor::BodyKind::Typed,
                request_type: stringify!($req),
                response_type: stringify!($resp),
                request_schema: $crate::__schema!($req),
                response_schema: $crate::__schema!($resp),
            });
    };
    (@const raw $wire:ident $svc:literal $client:ident ($req:ty) [$resp:ty]) => {
        #[doc = concat!("`/", $svc, "/", stringify!($wire), "`: unary, raw bytes to raw bytes.")]
        pub const $wire: $crate::descriptor::Method<
            $client,
            $crate::descriptor::RawBody,
            $crate::descriptor::RawBody,
        > = $crate::descriptor::Method::new($crate::descriptor::MethodDescriptor {
            service: $svc,
            name: stringify!($wire),
            path: concat!("/", $svc, "/", stringify!($wire)),
            kind: $crate::descriptor::MethodKind::Unary,
            body: $crate::descriptor::BodyKind::Raw,
            request_type: "bytes",
            response_type: "bytes",
            request_schema: $crate::descriptor::no_schema,
            response_schema: $crate::descriptor::no_schema,
        });
    };
    (@const oneway $wire:ident $svc:literal $client:ident ($req:ty) []) => {
        #[doc = concat!("`/", $svc, "/", stringify!($wire), "`: oneway, `", stringify!($req), "` with no answer.")]
        pub const $wire: $crate::descriptor::Method<$client, $req, ()> =
            $crate::descriptor::Method::new($crate::descriptor::MethodDescriptor {
                service: $svc,
                name: stringify!($wire),
                path: concat!("/", $svc, "/", stringify!($wire)),
                kind: $crate::descriptor::MethodKind::Oneway,
                body: $crate::descriptor::BodyKind::Typed,
                request_type: stringify!($req),
                response_type: "()",
                request_schema: $crate::__schema!($req),
                response_schema: $crate::descriptor::no_schema,
            });
    };
    (@const server_stream $wire:ident $svc:literal $client:ident ($req:ty) [$resp:ty]) => {
        $crate::__service_method!(@stream_const ServerStream "server streaming"
            $wire $svc $client ($req) [$resp]);
    };
    (@const client_stream $wire:ident $svc:literal $client:ident ($req:ty) [$resp:ty]) => {
        $crate::__service_method!(@stream_const ClientStream "client streaming"
            $wire $svc $client ($req) [$resp]);
    };
    (@const bidi_stream $wire:ident $svc:literal $client:ident ($req:ty) [$resp:ty]) => {
        $crate::__service_method!(@stream_const BidiStream "bidirectional streaming"
            $wire $svc $client ($req) [$resp]);
    };
    (@stream_const $kind:ident $what:literal $wire:ident $svc:literal $client:ident ($req:ty) [$resp:ty]) => {
        #[doc = concat!("`/", $svc, "/", stringify!($wire), "`: ", $what, ", `", stringify!($req), "` to `", stringify!($resp), "`.")]
        pub const $wire: $crate::descriptor::Method<$client, $req, $resp> =
            $crate::descriptor::Method::new($crate::descriptor::MethodDescriptor {
                service: $svc,
                name: stringify!($wire),
                path: concat!("/", $svc, "/", stringify!($wire)),
                kind: $crate::descriptor::MethodKind::$kind,
                body: $crate::descriptor::BodyKind::Typed,
                request_type: stringify!($req),
                response_type: stringify!($resp),
                request_schema: $crate::__schema!($req),
                response_schema: $crate::__schema!($resp),
            });
    };
    (@const $($rest:tt)*) => {};

    // Its method on the client.
    (@client unary $wire:ident [$(#[$mattr:meta])*] $client:ident $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        pub fn $method(&self, ctx: &$crate::Context, req: &$req) -> ::core::result::Result<$resp, $crate::Error> {
            self.client
                .call_with(ctx, $client::$wire.path(), req, &self.options)
                .map($crate::client::Response::into_body)
        }
    };
    (@client raw $wire:ident [$(#[$mattr:meta])*] $client:ident $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        pub fn $method(&self, ctx: &$crate::Context, body: &[u8]) -> ::core::result::Result<$crate::__private::Bytes, $crate::Error> {
            self.client
                .call_raw(ctx, $client::$wire.path(), body, &self.options)
                .map($crate::client::Response::into_body)
        }
    };
    (@client oneway $wire:ident [$(#[$mattr:meta])*] $client:ident $method:ident ($req:ty) []) => {
        $(#[$mattr])*
        ///
        /// Sent as a ONEWAY frame: returns once it is queued on a healthy
        /// connection, and says nothing about whether the server ran it.
        pub fn $method(&self, ctx: &$crate::Context, req: &$req) -> ::core::result::Result<(), $crate::Error> {
            self.client.oneway_with(ctx, $client::$wire.path(), req, &self.options)
        }
    };
    (@client server_stream $wire:ident [$(#[$mattr:meta])*] $client:ident $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        ///
        /// A server stream: sends `req`, then iterates over the server's
        /// messages; the iterator ends after the last one, or with the
        /// stream's error. Dropping it early cancels the stream.
        pub fn $method(
            &self,
            ctx: &$crate::Context,
            req: &$req,
        ) -> ::core::result::Result<$crate::client::ServerStream<$resp>, $crate::Error> {
            self.client.server_stream_with(ctx, $client::$wire.path(), req, &self.options)
        }
    };
    (@client client_stream $wire:ident [$(#[$mattr:meta])*] $client:ident $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        ///
        /// A client stream: `send` each message, then `finish` for the
        /// server's one answer. Dropping it unfinished cancels the stream.
        pub fn $method(
            &self,
            ctx: &$crate::Context,
        ) -> ::core::result::Result<$crate::client::ClientStream<$req, $resp>, $crate::Error> {
            self.client.client_stream_with(ctx, $client::$wire.path(), &self.options)
        }
    };
    (@client bidi_stream $wire:ident [$(#[$mattr:meta])*] $client:ident $method:ident ($req:ty) [$resp:ty]) => {
        $(#[$mattr])*
        ///
        /// A bidirectional stream, split into its sender (`send`, then
        /// `finish` for END) and its receiver (an iterator of the server's
        /// messages), which two threads may use at once.
        pub fn $method(
            &self,
            ctx: &$crate::Context,
        ) -> ::core::result::Result<
            ($crate::client::StreamSender<$req>, $crate::client::StreamReceiver<$resp>),
            $crate::Error,
        > {
            self.client.bidi_stream_with(ctx, $client::$wire.path(), &self.options)
        }
    };
    (@client $($rest:tt)*) => {};
}

/// The [`SchemaFn`](crate::descriptor::SchemaFn) of a type: its JSON Schema
/// when it implements `schemars::JsonSchema`.
#[cfg(feature = "schemars")]
#[doc(hidden)]
#[macro_export]
macro_rules! __schema {
    ($ty:ty) => {{
        fn schema() -> ::core::option::Option<::std::string::String> {
            #[allow(unused_imports)]
            use $crate::descriptor::schema_probe::{Probe, WithSchema as _, WithoutSchema as _};
            (&Probe::<$ty>(::core::marker::PhantomData)).schema()
        }
        schema
    }};
}

/// Without the `schemars` feature no type has a schema.
#[cfg(not(feature = "schemars"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __schema {
    ($ty:ty) => {
        $crate::descriptor::no_schema
    };
}
