//! The pool's unit tests: queueing, expiry, panics, batches, wake-ups,
//! the one-CPU paths, backlog and shutdown.

use std::panic::{self, AssertUnwindSafe};

use super::worker::share;
use super::*;
use crossbeam_channel::unbounded;

fn pool<T: Task>(workers: usize, queue: usize) -> WorkerPool<T> {
    WorkerPool::new(PoolConfig {
        workers,
        queue_capacity: queue,
        thread_name: "test-worker".into(),
        stack_size: None,
        cpus: 2,
    })
    .unwrap()
}

#[test]
fn full_queue_hands_the_task_back_at_once() {
    let p: WorkerPool<Job> = pool(1, 1);
    let (block_tx, block_rx) = unbounded::<()>();
    let (started_tx, started_rx) = unbounded::<()>();
    p.try_submit(Box::new(move || {
        started_tx.send(()).unwrap();
        block_rx.recv().unwrap();
    }))
    .unwrap();
    started_rx.recv().unwrap();
    p.try_submit(Box::new(|| {})).unwrap(); // fills the queue
    let err = p.try_submit(Box::new(|| {})).unwrap_err();
    assert!(err.is_full());
    assert_eq!(p.stats().busy, 1);
    assert_eq!(p.stats().queued, 1);
    block_tx.send(()).unwrap();
    assert!(p.shutdown(Duration::from_secs(10)).stuck.is_empty());
    assert_eq!(p.stats().completed, 2);
}

#[test]
fn behind_while_tasks_wait_to_start_longer_than_asked() {
    let p: WorkerPool<Step> = pool(1, 16);
    let by = Duration::from_micros(20);
    let later = || Instant::now() + Duration::from_millis(1);
    assert!(!p.is_behind(later(), by, by), "nothing queued");
    let (done_tx, done_rx) = unbounded();
    let (gate_tx, gate_rx) = unbounded();
    let queued_at = Instant::now();
    // A batch of two quick tasks: the worker takes both, and the
    // second waits in its hands while the first waits for its gate.
    submit_waiting_pair(&p, true, gate_rx, &done_tx);
    let until = Instant::now() + Duration::from_secs(10);
    while p.stats().queued > 0 || p.stats().busy == 0 {
        assert!(Instant::now() < until, "the worker never took the batch");
        thread::yield_now();
    }
    assert!(p.is_behind(later(), by, by));
    assert!(
        !p.is_behind(queued_at + by / 2, by, by),
        "not yet for that long"
    );
    gate_tx.send(()).unwrap();
    for _ in 0..2 {
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    assert!(p.shutdown(Duration::from_secs(10)).stuck.is_empty());
    assert!(!p.is_behind(later(), by, by), "all done");
}

#[test]
fn behind_while_this_threads_batch_holds_tasks_longer_than_asked() {
    let p: WorkerPool<Job> = pool(1, 16);
    let by = Duration::from_micros(20);
    let (done_tx, done_rx) = unbounded::<()>();
    p.batch(|| {
        let opened = Instant::now();
        assert!(!p.is_behind(opened + by * 2, by, by), "an empty batch");
        p.try_submit(Box::new(move || done_tx.send(()).unwrap()))
            .unwrap();
        // The batch's clock was read before `opened`.
        assert!(p.is_behind(opened + by, Duration::MAX, by));
        assert!(!p.is_behind(opened - by, by, by), "not yet for that long");
    });
    done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        !p.is_behind(Instant::now() + by * 2, by, by),
        "sent and run"
    );
    p.shutdown(Duration::from_secs(10));
}

struct Timed {
    deadline: Instant,
    out: crossbeam_channel::Sender<Result<(), Duration>>,
}

impl Task for Timed {
    fn run(self) {
        self.out.send(Ok(())).unwrap();
    }
    fn deadline(&self) -> Option<Instant> {
        Some(self.deadline)
    }
    fn expire(self, waited: Duration) {
        self.out.send(Err(waited)).unwrap();
    }
}

#[test]
fn a_task_expired_in_the_queue_is_not_run() {
    let p: WorkerPool<Timed> = pool(1, 8);
    let (tx, rx) = unbounded();
    p.try_submit(Timed {
        deadline: Instant::now() - Duration::from_millis(1),
        out: tx.clone(),
    })
    .unwrap();
    p.try_submit(Timed {
        deadline: Instant::now() + Duration::from_secs(60),
        out: tx,
    })
    .unwrap();
    assert!(rx.recv().unwrap().is_err());
    assert!(rx.recv().unwrap().is_ok());
    p.shutdown(Duration::from_secs(10));
    assert_eq!(p.stats().expired, 1);
}

#[test]
fn a_panic_is_caught_and_the_worker_goes_on() {
    let p: WorkerPool<Job> = pool(1, 8);
    let (tx, rx) = unbounded();
    p.try_submit(Box::new(|| panic!("boom"))).unwrap();
    p.try_submit(Box::new(move || tx.send(()).unwrap()))
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    p.shutdown(Duration::from_secs(10));
    assert_eq!(p.stats().panicked, 1);
}

/// Waits until the pool's only worker has gone to sleep, so that what
/// the test queues next runs only if something wakes it.
fn wait_asleep<T: Task>(p: &WorkerPool<T>) {
    let until = Instant::now() + Duration::from_secs(10);
    while p.shared.unwoken.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "the worker never went to sleep");
        thread::yield_now();
    }
    // It announces itself and checks the queue under this lock, and
    // lets go of it only inside the wait.
    drop(p.shared.idle_lock.lock().unwrap());
}

#[test]
fn a_batch_wakes_for_what_it_queued_even_when_it_panics() {
    let p: WorkerPool<Job> = pool(1, 2);
    let (tx, rx) = unbounded();
    wait_asleep(&p);
    let refused = p.batch(|| {
        (0..3)
            .filter(|_| {
                let tx = tx.clone();
                p.try_submit(Box::new(move || tx.send(()).unwrap()))
                    .is_err()
            })
            .count()
    });
    // The queue holds two, and the worker sleeps until the batch ends.
    assert_eq!(refused, 1);
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    wait_asleep(&p);
    let tx2 = tx.clone();
    let panicked = panic::catch_unwind(AssertUnwindSafe(|| {
        p.batch(|| {
            p.try_submit(Box::new(move || tx2.send(()).unwrap()))
                .unwrap();
            panic!("the batch's caller fails");
        })
    }));
    assert!(panicked.is_err());
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // The batch is over: a plain submit wakes the worker itself.
    wait_asleep(&p);
    p.try_submit(Box::new(move || tx.send(()).unwrap()))
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    p.shutdown(Duration::from_secs(10));
}

#[test]
fn a_long_batch_wakes_workers_before_it_ends() {
    let p: WorkerPool<Job> = pool(1, 2 * WAKE_EVERY);
    let (tx, rx) = unbounded();
    wait_asleep(&p);
    p.batch(|| {
        for _ in 0..WAKE_EVERY {
            let tx = tx.clone();
            p.try_submit(Box::new(move || tx.send(()).unwrap()))
                .unwrap();
        }
        // Still inside the batch: only the early wake-up runs these.
        for _ in 0..WAKE_EVERY {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    });
    p.shutdown(Duration::from_secs(10));
}

#[test]
fn on_one_cpu_a_batch_goes_out_late() {
    let p: WorkerPool<Job> = WorkerPool::new(PoolConfig {
        workers: 1,
        queue_capacity: 2 * ONE_CPU_BATCH,
        cpus: 1,
        ..PoolConfig::default()
    })
    .unwrap();
    let (tx, rx) = unbounded();
    let submit = || {
        let tx = tx.clone();
        p.try_submit(Box::new(move || tx.send(()).unwrap()))
            .unwrap();
    };
    p.batch(|| {
        // Not after WAKE_EVERY tasks, as on more CPUs...
        (0..2 * WAKE_EVERY).for_each(|_| submit());
        assert!(p.shared.receiver.is_empty(), "sent early");
        // ...but after ONE_CPU_BATCH: still inside the batch, only
        // that lets these run.
        (2 * WAKE_EVERY..ONE_CPU_BATCH).for_each(|_| submit());
        for _ in 0..ONE_CPU_BATCH {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    });
    p.shutdown(Duration::from_secs(10));
}

/// A task that waits on `gate` (if any) and then reports `id`.
struct Step {
    quick: bool,
    gate: Option<Receiver<()>>,
    done: crossbeam_channel::Sender<u32>,
    id: u32,
}

impl Task for Step {
    fn run(self) {
        if let Some(gate) = self.gate {
            gate.recv_timeout(Duration::from_secs(10))
                .expect("the task it waits for never ran");
        }
        self.done.send(self.id).unwrap();
    }
    fn is_quick(&self) -> bool {
        self.quick
    }
}

/// Waits until `n` workers sleep with no wake-up on its way.
fn wait_unwoken<T: Task>(p: &WorkerPool<T>, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while p.shared.unwoken.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < until, "the workers never went to sleep");
        thread::yield_now();
    }
    drop(p.shared.idle_lock.lock().unwrap());
}

#[test]
fn quick_tasks_are_shared_with_a_sleeping_worker_only_on_more_cpus() {
    for (cpus, kept) in [(1, 2), (2, 1)] {
        let p: WorkerPool<Step> = WorkerPool::new(PoolConfig {
            workers: 1,
            queue_capacity: 8,
            cpus,
            ..PoolConfig::default()
        })
        .unwrap();
        wait_unwoken(&p, 1);
        let (done_tx, done_rx) = unbounded();
        let step = |id| Step {
            quick: true,
            gate: None,
            done: done_tx.clone(),
            id,
        };
        let mut rest = Queued {
            tasks: VecDeque::from([step(2), step(3)]),
            at: Instant::now(),
        };
        share(&p.shared, &step(1), &mut rest);
        assert_eq!(rest.tasks.len(), kept, "{cpus} CPUs");
        // What was handed back runs on the sleeping worker.
        for _ in kept..2 {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        p.shutdown(Duration::from_secs(10));
    }
}

/// Submits, in one batch, task 1 (`quick` or not), which waits for
/// `gate`, and task 2, quick, which does not wait.
fn submit_waiting_pair(
    p: &WorkerPool<Step>,
    quick: bool,
    gate: Receiver<()>,
    done: &crossbeam_channel::Sender<u32>,
) {
    p.batch(|| {
        for (id, quick, gate) in [(1, quick, Some(gate)), (2, true, None)] {
            p.try_submit(Step {
                quick,
                gate,
                done: done.clone(),
                id,
            })
            .unwrap();
        }
    });
}

#[test]
fn a_batch_spreads_over_sleeping_workers() {
    // Both tasks are quick, but the first waits for the second: only
    // another worker taking half of the batch lets it finish.
    let p: WorkerPool<Step> = pool(2, 8);
    wait_unwoken(&p, 2);
    let (done_tx, done_rx) = unbounded();
    let (gate_tx, gate_rx) = unbounded();
    submit_waiting_pair(&p, true, gate_rx, &done_tx);
    // Well within the 10 s the first task waits for its gate.
    assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(2));
    gate_tx.send(()).unwrap();
    assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(1));
    p.shutdown(Duration::from_secs(10));
}

#[test]
fn no_task_waits_behind_one_that_is_not_quick() {
    let p: WorkerPool<Step> = pool(2, 8);
    let (done_tx, done_rx) = unbounded();
    // Keep one worker busy, so no worker sleeps when the batch arrives.
    let (hold_tx, hold_rx) = unbounded();
    p.try_submit(Step {
        quick: true,
        gate: Some(hold_rx),
        done: done_tx.clone(),
        id: 0,
    })
    .unwrap();
    wait_unwoken(&p, 1);
    let (gate_tx, gate_rx) = unbounded();
    submit_waiting_pair(&p, false, gate_rx, &done_tx);
    // The worker that took the batch runs task 1, which waits for 2:
    // 2 went back to the queue, and runs once the other worker is free.
    hold_tx.send(()).unwrap();
    let mut first: Vec<u32> = (0..2)
        .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    first.sort_unstable();
    assert_eq!(first, [0, 2]);
    gate_tx.send(()).unwrap();
    assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(1));
    p.shutdown(Duration::from_secs(10));
}

#[test]
fn submit_waits_for_room_and_fails_after_shutdown() {
    let p: WorkerPool<Job> = pool(1, 1);
    let (block_tx, block_rx) = unbounded::<()>();
    let (started_tx, started_rx) = unbounded::<()>();
    p.submit(Box::new(move || {
        started_tx.send(()).unwrap();
        block_rx.recv().unwrap();
    }))
    .unwrap();
    started_rx.recv().unwrap();
    let (ran_tx, ran_rx) = unbounded::<u32>();
    let tx = ran_tx.clone();
    p.submit(Box::new(move || tx.send(1).unwrap())).unwrap(); // fills the queue
    thread::scope(|s| {
        let waiter = s.spawn(|| {
            let tx = ran_tx.clone();
            p.submit(Box::new(move || tx.send(2).unwrap())).is_ok()
        });
        block_tx.send(()).unwrap();
        assert!(waiter.join().unwrap());
    });
    let mut ran: Vec<u32> = ran_rx.iter().take(2).collect();
    ran.sort_unstable();
    assert_eq!(ran, [1, 2]);
    p.shutdown(Duration::from_secs(10));
    assert!(matches!(
        p.submit(Box::new(|| {})),
        Err(SubmitError::Closed(_))
    ));
}

struct Counted {
    started: crossbeam_channel::Sender<()>,
    abandoned: crossbeam_channel::Sender<()>,
    gate: Receiver<()>,
}

impl Task for Counted {
    fn run(self) {
        self.started.send(()).unwrap();
        let _ = self.gate.recv();
    }
    fn abandon(self) {
        self.abandoned.send(()).unwrap();
    }
}

#[test]
fn shutdown_abandons_the_queue_and_names_stuck_workers() {
    let p: WorkerPool<Counted> = pool(1, 8);
    let (ab_tx, ab_rx) = unbounded();
    let (gate_tx, gate_rx) = unbounded();
    let (started_tx, started_rx) = unbounded();
    for _ in 0..3 {
        p.try_submit(Counted {
            started: started_tx.clone(),
            abandoned: ab_tx.clone(),
            gate: gate_rx.clone(),
        })
        .unwrap();
    }
    started_rx.recv().unwrap(); // one running, two queued
    let report = p.shutdown(Duration::from_millis(50));
    assert_eq!(report.abandoned, 2);
    assert_eq!(report.stuck, vec!["test-worker-0".to_string()]);
    assert_eq!(ab_rx.try_iter().count(), 2);
    drop(gate_tx); // lets the stuck worker finish
    assert!(p.shared.alive.wait_timeout(Duration::from_secs(10)));
    assert!(matches!(
        p.try_submit(Counted {
            started: started_tx,
            abandoned: ab_tx,
            gate: gate_rx
        }),
        Err(SubmitError::Closed(_))
    ));
}
