//! A service declared with `service!`: the generated server and client
//! against each other in both modes (unary, raw and oneway methods,
//! deadlines, metadata both ways, per-method options), its streaming
//! methods through the generated stubs, and what the reflection service
//! reports of it.

mod util;

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use syncrpc::descriptor::{BodyKind, MethodKind};
use syncrpc::server::reflection::{DescribeRequest, ListRequest, ReflectionClient};
use syncrpc::server::REFLECTION_SERVICE;
use syncrpc::{CallOptions, Client, Code, Context, Status};
use util::{Mode, WAIT};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Note {
    pub text: String,
}

/// What a handler saw of its call.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Seen {
    /// The request metadata's `tenant`.
    pub tenant: Option<String>,
    /// The deadline left when the handler ran, in milliseconds.
    pub remaining_ms: Option<u64>,
    pub trace_id: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Wait {
    pub ms: u64,
}

syncrpc::service! {
    /// A service with one of each kind of method.
    pub service Notes("test.Notes") client NotesClient {
        /// The note back, upper-cased.
        unary Shout => fn shout(Note) -> Note;
        /// What the handler saw of the call.
        unary Inspect => fn inspect(()) -> Seen;
        /// Waits `ms`, or until the call's deadline passes.
        unary Wait => fn wait(Wait) -> ();
        /// The bytes back, reversed.
        raw Reverse => fn reverse(Bytes) -> Bytes;
        /// Keeps the note; answers nothing.
        oneway Keep => fn keep(Note);
    }
}

struct Impl {
    kept: Mutex<mpsc::Sender<Note>>,
}

impl Notes for Impl {
    fn shout(&self, ctx: &Context, req: Note) -> Result<Note, Status> {
        ctx.set_response_metadata("shouted", "yes");
        Ok(Note {
            text: req.text.to_uppercase(),
        })
    }

    fn inspect(&self, ctx: &Context, _: ()) -> Result<Seen, Status> {
        Ok(Seen {
            tenant: ctx.metadata().get_str("tenant").map(str::to_owned),
            remaining_ms: ctx.remaining().map(|d| d.as_millis() as u64),
            trace_id: ctx.trace_id().map(|t| t.to_string()),
        })
    }

    fn wait(&self, ctx: &Context, req: Wait) -> Result<(), Status> {
        ctx.wait_cancelled(Duration::from_millis(req.ms));
        ctx.check()
    }

    fn reverse(&self, _: &Context, body: Bytes) -> Result<Bytes, Status> {
        let mut v = body.to_vec();
        v.reverse();
        Ok(Bytes::from(v))
    }

    fn keep(&self, _: &Context, req: Note) -> Result<(), Status> {
        let _ = self.kept.lock().unwrap().send(req);
        Ok(())
    }
}

/// A server of `test.Notes` in `mode`, Wait limited to 300 ms by a typed
/// method option, and a receiver of what Keep kept.
fn serve(mode: Mode) -> (syncrpc::Server, NotesClient, mpsc::Receiver<Note>) {
    let (tx, rx) = mpsc::channel();
    let service = Impl {
        kept: Mutex::new(tx),
    }
    .into_service()
    .method_timeout(NotesClient::Wait, Duration::from_millis(300));
    let server = util::builder(mode)
        .service(service)
        .bind("127.0.0.1:0")
        .unwrap();
    let client = NotesClient::connect(server.local_addr()).unwrap();
    (server, client, rx)
}

per_mode!(
    unary_raw_and_oneway_methods_answer_through_the_typed_client,
    metadata_deadlines_and_trace_ids_pass_through,
    method_options_and_the_whole_response,
    reflection_lists_and_describes_the_declared_methods,
    reflection_can_be_turned_off,
    stream_methods_answer_through_the_typed_client,
    a_stream_ends_with_the_handlers_status_and_the_stubs_options,
);

fn unary_raw_and_oneway_methods_answer_through_the_typed_client(mode: Mode) {
    let (server, notes, kept) = serve(mode);
    let ctx = Context::background().with_timeout(WAIT);
    let loud = notes.shout(&ctx, &Note { text: "hi".into() }).unwrap();
    assert_eq!(loud.text, "HI");
    assert_eq!(&notes.reverse(&ctx, b"abc").unwrap()[..], b"cba");
    notes
        .keep(
            &ctx,
            &Note {
                text: "kept".into(),
            },
        )
        .unwrap();
    let note = kept.recv_timeout(WAIT).expect("the oneway call ran");
    assert_eq!(note.text, "kept");
    // The untyped client reaches the same methods by name.
    let raw = notes
        .client()
        .call_raw(&ctx, "/test.Notes/Reverse", b"xy", &CallOptions::new())
        .unwrap();
    assert_eq!(&raw.body()[..], b"yx");
    server.shutdown();
}

fn metadata_deadlines_and_trace_ids_pass_through(mode: Mode) {
    let (server, notes, _kept) = serve(mode);
    let trace = syncrpc::TraceId::new("typed-trace-1").unwrap();
    let tenant = notes.with_options(
        CallOptions::new()
            .metadata("tenant", "acme")
            .timeout(Duration::from_secs(5))
            .trace_id(trace),
    );
    let seen = tenant.inspect(&Context::background(), &()).unwrap();
    assert_eq!(seen.tenant.as_deref(), Some("acme"));
    let left = seen.remaining_ms.expect("the handler has the deadline");
    assert!(left > 0 && left <= 5000, "{left}");
    assert_eq!(seen.trace_id.as_deref(), Some("typed-trace-1"));
    // Without options, no metadata and the context's deadline.
    let seen = notes
        .inspect(
            &Context::background().with_timeout(Duration::from_secs(3)),
            &(),
        )
        .unwrap();
    assert_eq!(seen.tenant, None);
    assert!(seen.remaining_ms.unwrap() <= 3000);
    // A caller's deadline cuts a call short.
    let err = notes
        .wait(
            &Context::background().with_timeout(Duration::from_millis(50)),
            &Wait { ms: 10_000 },
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
    server.shutdown();
}

fn method_options_and_the_whole_response(mode: Mode) {
    let (server, notes, _kept) = serve(mode);
    // The server's method timeout (300 ms) ends a 10 s wait well before
    // the caller's 10 s deadline.
    let err = notes
        .wait(
            &Context::background().with_timeout(WAIT),
            &Wait { ms: 10_000 },
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
    // `invoke` returns the response metadata with the body.
    let resp = notes
        .invoke(
            NotesClient::Shout,
            &Context::background(),
            &Note { text: "a".into() },
        )
        .unwrap();
    assert_eq!(resp.body().text, "A");
    assert_eq!(resp.metadata().get_str("shouted"), Some("yes"));
    let resp = notes
        .invoke_raw(NotesClient::Reverse, &Context::background(), b"12")
        .unwrap();
    assert_eq!(&resp.body()[..], b"21");
    server.shutdown();
}

/// A method as `List` reports it: name, kind, body, types and timeout.
type Summary<'a> = (&'a str, MethodKind, BodyKind, &'a str, &'a str, Option<u64>);

fn reflection_lists_and_describes_the_declared_methods(mode: Mode) {
    let (server, notes, _kept) = serve(mode);
    let reflection = ReflectionClient::new(notes.client().clone());
    let ctx = Context::background().with_timeout(WAIT);
    let all = reflection.list(&ctx, &ListRequest::default()).unwrap();
    let names: Vec<&str> = all.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["syncrpc.Health", REFLECTION_SERVICE, "test.Notes"]);
    let listed = reflection
        .list(
            &ctx,
            &ListRequest {
                service: "test.Notes".into(),
            },
        )
        .unwrap();
    let methods = &listed.services[0].methods;
    let summary: Vec<Summary> = methods
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.kind,
                m.body,
                m.request_type.as_str(),
                m.response_type.as_str(),
                m.timeout_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "Shout",
                MethodKind::Unary,
                BodyKind::Typed,
                "Note",
                "Note",
                None
            ),
            (
                "Inspect",
                MethodKind::Unary,
                BodyKind::Typed,
                "()",
                "Seen",
                None
            ),
            (
                "Wait",
                MethodKind::Unary,
                BodyKind::Typed,
                "Wait",
                "()",
                Some(300)
            ),
            (
                "Reverse",
                MethodKind::Unary,
                BodyKind::Raw,
                "bytes",
                "bytes",
                None
            ),
            (
                "Keep",
                MethodKind::Oneway,
                BodyKind::Typed,
                "Note",
                "()",
                None
            ),
        ]
    );
    // The descriptors the client carries say the same.
    let declared: Vec<&str> = NotesClient::METHODS.iter().map(|m| m.path).collect();
    let served: Vec<&str> = methods.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(declared, served);
    assert!(methods.iter().all(|m| m.request_schema.is_none()));

    let shout = reflection
        .describe(
            &ctx,
            &DescribeRequest {
                method: "/test.Notes/Shout".into(),
            },
        )
        .unwrap();
    assert_eq!(shout.path, "/test.Notes/Shout");
    #[cfg(feature = "schemars")]
    {
        let schema = shout.request_schema.expect("Note derives JsonSchema");
        assert!(schema.contains("\"text\""), "{schema}");
        // Seen does not derive it.
        let inspect = reflection
            .describe(
                &ctx,
                &DescribeRequest {
                    method: "/test.Notes/Inspect".into(),
                },
            )
            .unwrap();
        assert_eq!(inspect.response_schema, None);
    }
    #[cfg(not(feature = "schemars"))]
    assert_eq!(shout.request_schema, None);

    let err = reflection
        .describe(
            &ctx,
            &DescribeRequest {
                method: "/test.Notes/Whisper".into(),
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND);
    assert_eq!(
        err.status().message(),
        "unknown method /test.Notes/Whisper; test.Notes has: Shout, Inspect, Wait, Reverse, Keep"
    );
    server.shutdown();
}

fn reflection_can_be_turned_off(mode: Mode) {
    let server = util::builder(mode)
        .reflection_service(false)
        .bind("127.0.0.1:0")
        .unwrap();
    let client = Client::connect(server.local_addr()).unwrap();
    let err = ReflectionClient::new(client)
        .list(
            &Context::background().with_timeout(WAIT),
            &ListRequest::default(),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::UNIMPLEMENTED);
    server.shutdown();
}

syncrpc::service! {
    /// A service with no methods yet compiles without a warning.
    pub service Nothing("test.Nothing") client NothingClient {}
}

struct NoImpl;

impl Nothing for NoImpl {}

#[test]
fn a_service_without_methods_is_a_service() {
    let svc = NoImpl.into_service();
    assert_eq!(svc.name(), "test.Nothing");
    assert_eq!(svc.method_names().count(), 0);
    assert!(NothingClient::METHODS.is_empty());
    assert_eq!(NothingClient::SERVICE, "test.Nothing");
}

#[test]
#[should_panic(expected = "is not a method of service \"other.Svc\"")]
fn a_descriptor_of_another_service_is_refused() {
    let _ = syncrpc::Service::new("other.Svc")
        .method("Shout", |_: &Context, n: Note| Ok::<_, Status>(n))
        .method_timeout(NotesClient::Shout, Duration::from_secs(1));
}

/// How many ticks `Ticks` sends, and whether it then fails.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Ticks {
    pub n: u64,
    pub fail: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Tick {
    pub i: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Total {
    pub sum: i64,
    pub count: u64,
}

syncrpc::service! {
    /// A service with one method of each streaming kind.
    pub service Streams("test.Streams") client StreamsClient {
        /// Ticks 0 to n-1, then OK, or `ABORTED` when asked to fail.
        server_stream Ticks => fn ticks(Ticks) -> Tick;
        /// The sum and count of the numbers sent.
        client_stream Add => fn add(i64) -> Total;
        /// Each note back as it arrives, upper-cased, then the request
        /// metadata's `tenant` as a last note.
        bidi_stream Shout => fn shout(Note) -> Note;
    }
}

struct StreamsImpl;

impl Streams for StreamsImpl {
    fn ticks(
        &self,
        ctx: &Context,
        req: Ticks,
        sink: &syncrpc::server::Sink<Tick>,
    ) -> Result<(), Status> {
        for i in 0..req.n {
            sink.send(&Tick { i })?;
        }
        ctx.set_response_metadata("sent", req.n.to_string());
        if req.fail {
            return Err(Status::new(Code::ABORTED, "asked to fail"));
        }
        Ok(())
    }

    fn add(&self, _: &Context, msgs: syncrpc::server::Incoming<i64>) -> Result<Total, Status> {
        let mut total = Total { sum: 0, count: 0 };
        for v in msgs {
            total.sum += v?;
            total.count += 1;
        }
        Ok(total)
    }

    fn shout(
        &self,
        ctx: &Context,
        msgs: syncrpc::server::Incoming<Note>,
        sink: &syncrpc::server::Sink<Note>,
    ) -> Result<(), Status> {
        for note in msgs {
            sink.send(&Note {
                text: note?.text.to_uppercase(),
            })?;
        }
        let tenant = ctx.metadata().get_str("tenant").unwrap_or("none");
        sink.send(&Note {
            text: tenant.to_owned(),
        })
    }
}

fn serve_streams(mode: Mode) -> (syncrpc::Server, StreamsClient) {
    let server = util::builder(mode)
        .service(StreamsImpl.into_service())
        .bind("127.0.0.1:0")
        .unwrap();
    let client = StreamsClient::connect(server.local_addr()).unwrap();
    (server, client)
}

fn stream_methods_answer_through_the_typed_client(mode: Mode) {
    let (server, streams) = serve_streams(mode);
    let ctx = Context::background().with_timeout(WAIT);

    let mut ticks = streams.ticks(&ctx, &Ticks { n: 3, fail: false }).unwrap();
    let got: Vec<u64> = ticks.by_ref().map(|t| t.unwrap().i).collect();
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(ticks.metadata().unwrap().get_str("sent"), Some("3"));

    let mut add = streams.add(&ctx).unwrap();
    for v in [1, 2, -7] {
        add.send(&v).unwrap();
    }
    assert_eq!(add.finish().unwrap(), Total { sum: -4, count: 3 });

    // The two halves on two threads: every note comes back in order.
    let (mut tx, rx) = streams.shout(&ctx).unwrap();
    let writer = std::thread::spawn(move || {
        for text in ["a", "b", "c"] {
            tx.send(&Note { text: text.into() }).unwrap();
        }
        tx.finish().unwrap();
    });
    let back: Vec<String> = rx.map(|n| n.unwrap().text).collect();
    writer.join().unwrap();
    assert_eq!(back, ["A", "B", "C", "none"]);

    // The descriptors say each method's kind, and reflection reports them.
    let kinds: Vec<MethodKind> = StreamsClient::METHODS.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            MethodKind::ServerStream,
            MethodKind::ClientStream,
            MethodKind::BidiStream
        ]
    );
    let reflection = ReflectionClient::new(streams.client().clone());
    let listed = reflection
        .list(
            &ctx,
            &ListRequest {
                service: "test.Streams".into(),
            },
        )
        .unwrap();
    let listed: Vec<(&str, MethodKind)> = listed.services[0]
        .methods
        .iter()
        .map(|m| (m.name.as_str(), m.kind))
        .collect();
    assert_eq!(
        listed,
        [
            ("Ticks", MethodKind::ServerStream),
            ("Add", MethodKind::ClientStream),
            ("Shout", MethodKind::BidiStream),
        ]
    );
    server.shutdown();
}

fn a_stream_ends_with_the_handlers_status_and_the_stubs_options(mode: Mode) {
    let (server, streams) = serve_streams(mode);
    let ctx = Context::background().with_timeout(WAIT);

    // The messages sent before the failure arrive, then its status.
    let items: Vec<Result<Tick, syncrpc::Error>> = streams
        .ticks(&ctx, &Ticks { n: 2, fail: true })
        .unwrap()
        .collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[1].as_ref().unwrap().i, 1);
    let err = items[2].as_ref().unwrap_err();
    assert_eq!(err.status().code(), Code::ABORTED);
    assert_eq!(err.status().message(), "asked to fail");

    // The stub's options (here metadata) go with every stream it opens.
    let acme = streams.with_options(CallOptions::new().metadata("tenant", "acme"));
    let (mut tx, rx) = acme.shout(&ctx).unwrap();
    tx.send(&Note { text: "x".into() }).unwrap();
    tx.finish().unwrap();
    let back: Vec<String> = rx.map(|n| n.unwrap().text).collect();
    assert_eq!(back, ["X", "acme"]);
    server.shutdown();
}
