//! Event mode's short paths: while every worker is busy, a read that
//! brought one request alone, of a quick method, is run by the event loop
//! itself instead of waiting for a worker; while the workers are behind
//! (requests wait in the queue, untaken), so are the quick requests of a
//! pipelined read. Each test checks a rule of those paths: they are taken
//! only then, the loop runs a read's requests for a bounded time and
//! sends the rest to the workers, and a call that turns out long sends
//! the next ones back to the workers.

mod util;

use std::thread;

use crossbeam_channel::{Receiver, Sender};
use syncrpc::codec::{FrameType, RequestMeta};
use syncrpc::server::Mode;
use syncrpc::{Context, Service, Status};
use util::{encode, RawClient, WAIT};

const QUICK: u32 = 0;
const BLOCK: u32 = 1;
/// Takes 50 ms: far past the pace's long call (10 ms).
const SLOW: u32 = 2;
/// Keeps its thread busy for 20 us: a quick call, but a read of many of
/// them outlasts what the loop runs of one read (50 us).
const WORK: u32 = 3;

/// `lone.Lone/Step`: answers the name of the thread it ran on; `BLOCK`
/// first says it started and waits for a release, `SLOW` takes 50 ms.
fn lone_service() -> (Service, Receiver<String>, Sender<()>) {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded::<()>();
    let svc = Service::new("lone.Lone").method("Step", move |_: &Context, what: u32| {
        let me = thread::current().name().unwrap_or("").to_owned();
        if what == BLOCK {
            started_tx.send(me.clone()).unwrap();
            release_rx
                .recv_timeout(WAIT)
                .map_err(|_| Status::aborted("never released"))?;
        }
        if what == SLOW {
            thread::sleep(std::time::Duration::from_millis(50));
        }
        if what == WORK {
            let until = std::time::Instant::now() + std::time::Duration::from_micros(20);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        Ok::<_, Status>(me)
    });
    (svc, started, release)
}

fn event_mode(prefix: &str) -> syncrpc::ServerBuilder {
    util::init_logging();
    util::builder(Mode::Event)
        .workers(1)
        .event_loops(1)
        .thread_name(prefix)
}

fn step(c: &mut RawClient, id: u32, what: u32) -> String {
    c.call(id, "/lone.Lone/Step", &what);
    c.response().decode::<String>()
}

/// A call with a 1 s deadline: the thread it ran on, or `None` if it
/// waited for the blocked worker until its deadline.
fn try_step(c: &mut RawClient, id: u32, what: u32) -> Option<String> {
    let meta = RequestMeta {
        timeout_ms: 1000,
        ..RequestMeta::new("/lone.Lone/Step")
    };
    c.call_meta(id, &meta, Default::default(), &encode(&what));
    let r = c.response();
    (r.code == syncrpc::Code::OK).then(|| r.decode::<String>())
}

/// Quick calls with the worker free, so that the method's pace becomes
/// known as quick. The first runs on the worker (the pace is unknown);
/// later ones may run on the loop when one arrives before the worker
/// has counted itself idle.
fn learn_quick(c: &mut RawClient, prefix: &str) {
    let first = step(c, 1, QUICK);
    assert!(first.starts_with(&format!("{prefix}-worker")), "{first}");
    for id in 2..=3 {
        step(c, id, QUICK);
    }
}

/// Blocks the only worker with a call on a connection of its own, and with
/// `queued`, queues a quick call behind it (sent with it, in one write, so
/// that neither is a lone request), which leaves the workers behind. A
/// lone call may run on the loop instead, if it comes while the worker
/// still counts itself busy with the last one: then it is released and
/// sent again, a bounded number of times.
fn block_the_worker(
    addr: std::net::SocketAddr,
    started: &Receiver<String>,
    release: &Sender<()>,
    queued: bool,
) -> RawClient {
    let mut blocker = RawClient::connect(addr);
    if queued {
        let meta = RequestMeta::new("/lone.Lone/Step");
        blocker.push_request(1, &meta, Default::default(), &encode(&BLOCK));
        blocker.push_request(2, &meta, Default::default(), &encode(&QUICK));
        blocker.flush();
        let on = started.recv_timeout(WAIT).unwrap();
        assert!(on.contains("-worker"), "{on}");
        // The quick call has waited for the worker longer than makes the
        // workers count as behind (1 ms) once this returns.
        thread::sleep(std::time::Duration::from_millis(2));
        return blocker;
    }
    for id in 1..=20 {
        blocker.call(id, "/lone.Lone/Step", &BLOCK);
        let on = started.recv_timeout(WAIT).unwrap();
        if on.contains("-worker") {
            return blocker;
        }
        release.send(()).unwrap();
        assert_eq!(blocker.response().decode::<String>(), on);
    }
    panic!("the blocking call never ran on the worker");
}

/// Releases the worker blocked by [`block_the_worker`] and reads the
/// blocker's answers.
fn release_the_worker(blocker: &mut RawClient, release: &Sender<()>, queued: bool) {
    release.send(()).unwrap();
    for _ in 0..1 + usize::from(queued) {
        blocker.response().decode::<String>();
    }
}

/// Runs `check` with the method known as quick and the only worker
/// blocked (with `queued`, a call queued behind it); `check` returns false when a call was timed long by the
/// machine's load rather than by the handler (a descheduled thread), which
/// marks the method slow: then the worker is released, the pace learned
/// again, and `check` tried again, a few times at most.
fn with_worker_blocked(
    prefix: &str,
    queued: bool,
    mut check: impl FnMut(&mut RawClient, &Sender<()>, &mut RawClient) -> bool,
) {
    // Each attempt on a server of its own, whose method's pace is learned
    // afresh.
    for _ in 0..5 {
        let (svc, started, release) = lone_service();
        let server = event_mode(prefix).service(svc).bind("127.0.0.1:0").unwrap();
        let mut c = RawClient::connect(server.local_addr());
        learn_quick(&mut c, prefix);
        let mut blocker = block_the_worker(server.local_addr(), &started, &release, queued);
        let done = check(&mut c, &release, &mut blocker);
        release_the_worker(&mut blocker, &release, queued);
        drop((c, blocker));
        let report = server.shutdown();
        if done {
            assert!(report.is_clean());
            return;
        }
    }
    panic!("every attempt saw a quick call timed long");
}

#[test]
fn a_lone_quick_request_runs_on_the_loop_while_the_worker_is_busy() {
    with_worker_blocked("loopq", false, |c, _, _| {
        // The worker is held: a quick call is still answered, by the loop.
        match try_step(c, 10, QUICK) {
            Some(name) => {
                assert!(name.starts_with("loopq-loop"), "{name}");
                true
            }
            None => false,
        }
    });
}

/// Sends `n` calls doing `what` in one write. Returns the calls the loop
/// ran (in the order answered) with the names of the threads they ran on,
/// or `None` if none ran there (the method was timed slow on a loaded
/// machine, so they waited for the worker until their deadline).
///
/// The loop writes the answers of what it ran together, once it is done
/// with the read: after the first answer, a PING's PONG comes after all
/// of them.
fn pipelined(c: &mut RawClient, first: u32, n: u32, what: u32) -> Option<Vec<(u32, String)>> {
    let meta = RequestMeta {
        timeout_ms: 2000,
        ..RequestMeta::new("/lone.Lone/Step")
    };
    for id in first..first + n {
        c.push_request(id, &meta, Default::default(), &encode(&what));
    }
    c.flush();
    let r = c.response();
    if r.code != syncrpc::Code::OK {
        return None;
    }
    let mut on_loop = vec![(r.id, r.decode::<String>())];
    c.ping(99);
    loop {
        let f = c.frame();
        match f.frame_type() {
            FrameType::Pong => return Some(on_loop),
            FrameType::Response => {
                let r = util::to_resp(&f);
                on_loop.push((r.id, r.decode::<String>()));
            }
            other => panic!("unexpected {other:?} frame"),
        }
    }
}

/// The rest of `n` calls from `first`, answered by the worker once it is
/// released, after the `done` answered before.
fn rest_on_the_worker(
    c: &mut RawClient,
    first: u32,
    n: u32,
    done: &[(u32, String)],
    release: &Sender<()>,
    blocker: &mut RawClient,
    prefix: &str,
) {
    release_the_worker(blocker, release, true);
    let mut ids: Vec<u32> = done.iter().map(|(id, _)| *id).collect();
    for _ in done.len()..n as usize {
        let r = c.response();
        let name = r.decode::<String>();
        assert!(name.starts_with(&format!("{prefix}-worker")), "{name}");
        ids.push(r.id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (first..first + n).collect::<Vec<_>>());
    // The caller releases once more; calls block and wait for it.
    let meta = RequestMeta::new("/lone.Lone/Step");
    blocker.push_request(3, &meta, Default::default(), &encode(&BLOCK));
    blocker.push_request(4, &meta, Default::default(), &encode(&QUICK));
    blocker.flush();
}

#[test]
fn pipelined_requests_wait_for_the_workers_while_they_keep_up() {
    with_worker_blocked("loopw", false, |c, release, blocker| {
        // Two requests and a PING in one write, with the worker busy but
        // nothing queued: the requests are not a lone one, and the workers
        // are not behind, so they wait for the worker; the PING is
        // answered first.
        let meta = RequestMeta::new("/lone.Lone/Step");
        c.push_request(20, &meta, Default::default(), &encode(&QUICK));
        c.push_request(21, &meta, Default::default(), &encode(&QUICK));
        c.enc.ping(syncrpc::codec::RequestId(9));
        c.flush();
        let f = c.frame();
        assert_eq!(f.frame_type(), FrameType::Pong, "{f:?}");
        release.send(()).unwrap();
        assert!(blocker.response().decode::<String>().contains("-worker"));
        // On one CPU a busy worker runs only once the loop steps aside, so
        // the workers count as behind and the loop runs them.
        let one_cpu = thread::available_parallelism().map_or(1, |n| n.get()) == 1;
        let ran_on = if one_cpu {
            "loopw-loop"
        } else {
            "loopw-worker"
        };
        for _ in 0..2 {
            let name = c.response().decode::<String>();
            assert!(name.starts_with(ran_on), "{name}");
        }
        // The caller releases once more; a call blocks for it.
        blocker.call(2, "/lone.Lone/Step", &BLOCK);
        true
    });
}

#[test]
fn pipelined_quick_requests_run_on_the_loop_while_the_workers_are_behind() {
    with_worker_blocked("loopp", true, |c, release, blocker| {
        // Four quick calls in one read, with the worker held and a call
        // queued for it: the loop runs them, one after another.
        let Some(on_loop) = pipelined(c, 20, 4, QUICK) else {
            return false;
        };
        for (i, (id, name)) in on_loop.iter().enumerate() {
            assert_eq!(*id, 20 + i as u32, "in the order read");
            assert!(name.starts_with("loopp-loop"), "{name}");
        }
        // The first at least: a read of more than one request is not a
        // lone one, yet it runs here. (A loaded machine can make the first
        // outlast the loop's time for the read, sending the others to the
        // worker.)
        rest_on_the_worker(c, 20, 4, &on_loop, release, blocker, "loopp");
        true
    });
}

#[test]
fn the_loop_runs_a_read_for_a_bounded_time_then_sends_the_rest_to_the_workers() {
    with_worker_blocked("loopb", true, |c, release, blocker| {
        // Sixteen quick calls of 20 us each: the loop runs what fits in
        // its 50 us, the rest wait for the worker.
        let Some(on_loop) = pipelined(c, 40, 16, WORK) else {
            return false;
        };
        assert!(
            on_loop.len() < 16,
            "the loop ran the whole read: {on_loop:?}"
        );
        for (i, (id, name)) in on_loop.iter().enumerate() {
            assert_eq!(*id, 40 + i as u32);
            assert!(name.starts_with("loopb-loop"), "{name}");
        }
        rest_on_the_worker(c, 40, 16, &on_loop, release, blocker, "loopb");
        true
    });
}

#[test]
fn a_call_that_turns_long_on_the_loop_sends_the_next_to_the_workers() {
    with_worker_blocked("loopl", false, |c, _, _| {
        // The same method takes long this time, on the loop, which times
        // it.
        let Some(name) = try_step(c, 300, SLOW) else {
            return false;
        };
        assert!(name.starts_with("loopl-loop"), "{name}");
        // The method is slow now: its next lone call, with the worker
        // still busy, waits for the worker instead of running on the
        // loop, so it runs out its deadline unrun.
        let meta = RequestMeta {
            timeout_ms: 300,
            ..RequestMeta::new("/lone.Lone/Step")
        };
        c.call_meta(301, &meta, Default::default(), &encode(&QUICK));
        c.response()
            .expect_code(syncrpc::Code::DEADLINE_EXCEEDED, "not run");
        true
    });
}
