//! The client's streams against the real server, in both I/O modes:
//! server, client and bidirectional streams with metadata, trailers and
//! compression; downloads and uploads many windows long; cancellation by
//! drop and by deadline reaching the handler; streams next to unary calls.

mod util;

use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use syncrpc::client::{CallOptions, Client};
use syncrpc::codec::Compression;
use syncrpc::flow_control::INITIAL_WINDOW;
use syncrpc::server::{Incoming, RawIncoming, RawSink, Sink};
use syncrpc::{Code, Context, Execution, Server, Service, Status};
use util::{Mode, WAIT};

per_mode!(
    count_sum_and_chat_work_end_to_end,
    a_download_many_windows_long_arrives_whole_and_in_order,
    an_upload_many_windows_long_arrives_whole,
    dropping_a_server_stream_cancels_the_handler,
    the_deadline_ends_the_stream_on_both_sides,
    a_handler_error_after_messages_reaches_the_client,
    concurrent_streams_on_one_connection_each_keep_their_order,
);

#[derive(Serialize, Deserialize, Debug)]
struct CountReq {
    n: u32,
    ms: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Tick {
    i: u32,
}

#[derive(Serialize, Deserialize, Debug)]
struct Total {
    sum: i64,
    count: u64,
}

/// Each handler's outcome, as it returns.
type Ends = Arc<Mutex<Option<mpsc::Sender<Result<(), Status>>>>>;

fn report(ends: &Ends, outcome: &Result<(), Status>) {
    if let Some(tx) = &*ends.lock().unwrap() {
        let _ = tx.send(outcome.clone());
    }
}

fn service(ends: &Ends) -> Service {
    let e = ends.clone();
    Service::new("st.S")
        .server_stream(
            "Count",
            move |ctx: &Context, req: CountReq, sink: &Sink<Tick>| {
                let outcome = (0..req.n).try_for_each(|i| {
                    if req.ms > 0 && ctx.wait_cancelled(Duration::from_millis(req.ms)) {
                        return ctx.check();
                    }
                    sink.send(&Tick { i })
                });
                ctx.set_response_metadata("sent", req.n.to_string());
                report(&e, &outcome);
                outcome
            },
        )
        .client_stream("Sum", |ctx: &Context, msgs: Incoming<i64>| {
            let mut t = Total { sum: 0, count: 0 };
            for m in msgs {
                t.sum += m?;
                t.count += 1;
            }
            if let Some(tag) = ctx.metadata().get_str("tag") {
                ctx.set_response_metadata("tag", tag.to_owned());
            }
            Ok::<_, Status>(t)
        })
        .bidi_stream(
            "Chat",
            |_ctx: &Context, msgs: Incoming<String>, sink: &Sink<String>| {
                for m in msgs {
                    sink.send(&m?)?;
                }
                Ok(())
            },
        )
        .raw_server_stream("Download", |_ctx: &Context, req: Bytes, sink: &RawSink| {
            let (n, size) = (req[0] as usize, usize::from(req[1]) * 1024);
            for i in 0..n {
                sink.send(&vec![i as u8; size])?;
            }
            Ok(())
        })
        .raw_client_stream("Upload", |_ctx: &Context, msgs: RawIncoming| {
            let (mut total, mut next) = (0u64, 0u8);
            for m in msgs {
                let m = m?;
                if m.iter().any(|b| *b != next) {
                    return Err(Status::data_loss("out of order"));
                }
                next = next.wrapping_add(1);
                total += m.len() as u64;
            }
            Ok(Bytes::from(total.to_string()))
        })
        .server_stream("Fails", |_ctx: &Context, n: u32, sink: &Sink<u32>| {
            for i in 0..n {
                sink.send(&i)?;
            }
            Err(Status::aborted("gave up after the messages"))
        })
        .method("Unary", |_ctx: &Context, x: u32| Ok::<_, Status>(x + 1))
}

fn start(mode: Mode) -> (Server, Client, mpsc::Receiver<Result<(), Status>>) {
    start_with(mode, 2)
}

/// With `workers` workers, so half as many streams at once.
fn start_with(mode: Mode, workers: usize) -> (Server, Client, mpsc::Receiver<Result<(), Status>>) {
    let ends: Ends = Arc::default();
    let (tx, rx) = mpsc::channel();
    *ends.lock().unwrap() = Some(tx);
    let server = util::builder(mode)
        .workers(workers)
        .service(service(&ends))
        .bind("127.0.0.1:0")
        .unwrap();
    let client = Client::connect(server.local_addr()).unwrap();
    (server, client, rx)
}

fn bg() -> Context {
    Context::background()
}

fn count_sum_and_chat_work_end_to_end(mode: Mode) {
    let (_server, client, _ends) = start(mode);
    let mut ticks = client
        .server_stream::<_, Tick>(&bg(), "/st.S/Count", &CountReq { n: 20, ms: 0 })
        .unwrap();
    let got: Vec<Tick> = ticks.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(got, (0..20).map(|i| Tick { i }).collect::<Vec<_>>());
    assert_eq!(ticks.metadata().unwrap().get_str("sent"), Some("20"));

    let opts = CallOptions::new()
        .metadata("tag", "t-1")
        .compression(Compression::Gzip)
        .compress_min_size(0);
    let mut sum = client
        .client_stream_with::<i64, Total>(&bg(), "/st.S/Sum", &opts)
        .unwrap();
    for v in 1..=100 {
        sum.send(&v).unwrap();
    }
    let resp = sum.finish_response().unwrap();
    assert_eq!((resp.body().sum, resp.body().count), (5050, 100));
    assert_eq!(resp.metadata().get_str("tag"), Some("t-1"));

    let (mut tx, rx) = client
        .bidi_stream::<str, String>(&bg(), "/st.S/Chat")
        .unwrap();
    let reader = thread::spawn(move || rx.collect::<Result<Vec<String>, _>>());
    let c = client.clone();
    let unary = thread::spawn(move || {
        (0..50u32)
            .map(|x| c.call::<u32, u32>(&bg(), "/st.S/Unary", &x).unwrap())
            .sum::<u32>()
    });
    for i in 0..300 {
        tx.send(&format!("line {i}")).unwrap();
    }
    tx.finish().unwrap();
    let lines = reader.join().unwrap().unwrap();
    assert_eq!(
        lines,
        (0..300).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    assert_eq!(unary.join().unwrap(), (1..=50).sum::<u32>());
}

fn a_download_many_windows_long_arrives_whole_and_in_order(mode: Mode) {
    let (_server, client, _ends) = start(mode);
    // 200 messages of 64 KiB: 50 windows.
    let chunks = client
        .raw_server_stream(&bg(), "/st.S/Download", &[200, 64], &CallOptions::new())
        .unwrap();
    let mut total = 0;
    for (i, chunk) in chunks.enumerate() {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.len(), 64 * 1024);
        assert!(
            chunk.iter().all(|b| *b == i as u8),
            "message {i} out of order"
        );
        total += chunk.len();
    }
    assert_eq!(total, 200 * 64 * 1024);
    assert!(total > 40 * INITIAL_WINDOW as usize);
}

fn an_upload_many_windows_long_arrives_whole(mode: Mode) {
    let (_server, client, _ends) = start(mode);
    let mut upload = client
        .raw_client_stream(&bg(), "/st.S/Upload", &CallOptions::new())
        .unwrap();
    for i in 0..160u8 {
        upload.send(&[i; 64 * 1024]).unwrap();
    }
    let stored = upload.finish().unwrap();
    assert_eq!(&stored[..], (160 * 64 * 1024).to_string().as_bytes());
}

fn dropping_a_server_stream_cancels_the_handler(mode: Mode) {
    let (_server, client, ends) = start(mode);
    let mut ticks = client
        .server_stream::<_, Tick>(&bg(), "/st.S/Count", &CountReq { n: 10_000, ms: 5 })
        .unwrap();
    assert_eq!(ticks.next().unwrap().unwrap(), Tick { i: 0 });
    drop(ticks);
    let outcome = ends.recv_timeout(WAIT).expect("the handler returned");
    assert_eq!(outcome.unwrap_err().code(), Code::CANCELLED);
    // The connection carries on.
    assert_eq!(
        client.call::<u32, u32>(&bg(), "/st.S/Unary", &1).unwrap(),
        2
    );
}

fn the_deadline_ends_the_stream_on_both_sides(mode: Mode) {
    let (_server, client, ends) = start(mode);
    let opts = CallOptions::new().timeout(Duration::from_millis(300));
    let mut ticks = client
        .server_stream_with::<_, Tick>(&bg(), "/st.S/Count", &CountReq { n: 10_000, ms: 5 }, &opts)
        .unwrap();
    let err = ticks.find_map(Result::err).expect("the stream fails");
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert_eq!(err.execution(), Execution::MayHaveRun);
    let outcome = ends.recv_timeout(WAIT).expect("the handler returned");
    assert!(outcome.is_err());
}

fn a_handler_error_after_messages_reaches_the_client(mode: Mode) {
    let (_server, client, _ends) = start(mode);
    let mut nums = client
        .server_stream::<_, u32>(&bg(), "/st.S/Fails", &3u32)
        .unwrap();
    for i in 0..3 {
        assert_eq!(nums.next().unwrap().unwrap(), i);
    }
    let err = nums.next().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::ABORTED);
    assert_eq!(err.execution(), Execution::Ran);
    assert!(nums.next().is_none());
}

fn concurrent_streams_on_one_connection_each_keep_their_order(mode: Mode) {
    // 16 workers: 8 stream slots for 6 streams, the rest for unary calls.
    let (_server, client, _ends) = start_with(mode, 16);
    let readers: Vec<_> = (0..6u32)
        .map(|k| {
            let c = client.clone();
            thread::spawn(move || {
                let n = 200 + k * 50;
                let ticks = c
                    .server_stream::<_, Tick>(&bg(), "/st.S/Count", &CountReq { n, ms: 0 })
                    .unwrap();
                let got: Vec<u32> = ticks.map(|t| t.unwrap().i).collect();
                assert_eq!(got, (0..n).collect::<Vec<_>>(), "stream {k} out of order");
            })
        })
        .collect();
    let c = client.clone();
    let unary = thread::spawn(move || {
        for x in 0..100u32 {
            assert_eq!(c.call::<u32, u32>(&bg(), "/st.S/Unary", &x).unwrap(), x + 1);
        }
    });
    for r in readers {
        r.join().unwrap();
    }
    unary.join().unwrap();
}
