use super::lifecycle::FORCE_GRACE;
use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::bounded;

#[derive(Default)]
struct Fake {
    steps: Mutex<Vec<&'static str>>,
    drained: AtomicBool,
    workers_until: Mutex<Option<Instant>>,
}

impl Target for Fake {
    fn stop_serving(&self) {
        lock(&self.steps).push("not serving");
    }
    fn go_away(&self) {
        lock(&self.steps).push("goaway");
    }
    fn wait_drained(&self, until: Instant) -> bool {
        if self.drained.load(Ordering::SeqCst) {
            return true;
        }
        thread::sleep(until.saturating_duration_since(Instant::now()));
        false
    }
    fn stop_io(&self, _forced: bool) -> Vec<String> {
        lock(&self.steps).push("stop io");
        Vec::new()
    }
    fn stop_workers(&self, until: Instant) -> Vec<String> {
        lock(&self.steps).push("stop workers");
        *lock(&self.workers_until) = Some(until);
        Vec::new()
    }
    fn tally(&self) -> Tally {
        Tally::default()
    }
}

fn plan(hooks: Vec<Hook>) -> Plan {
    Plan {
        timeout: Duration::from_secs(10),
        drain_delay: Duration::ZERO,
        hooks_budget: Duration::from_secs(5),
        hooks,
        thread_name: "test".into(),
    }
}

#[test]
fn steps_run_in_order_and_hooks_newest_first() {
    let fake = Fake::default();
    fake.drained.store(true, Ordering::SeqCst);
    let order = Arc::new(Mutex::new(Vec::new()));
    let hooks: Vec<Hook> = (0..3)
        .map(|i| {
            let order = order.clone();
            Box::new(move |_left: Duration| lock(&order).push(i)) as Hook
        })
        .collect();
    let life = Lifecycle::new();
    life.trigger(Trigger::Graceful(None));
    life.coordinate(&fake, plan(hooks));
    let report = life.wait();
    assert_eq!(
        *lock(&fake.steps),
        ["not serving", "goaway", "stop io", "stop workers"]
    );
    assert_eq!(*lock(&order), [2, 1, 0]);
    assert_eq!((report.hooks_run, report.hooks_panicked), (3, 0));
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_panicking_hook_is_skipped_and_the_rest_run() {
    let fake = Fake::default();
    fake.drained.store(true, Ordering::SeqCst);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let hooks: Vec<Hook> = vec![
        Box::new(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        }),
        Box::new(|_| panic!("hook failed")),
    ];
    let life = Lifecycle::new();
    life.trigger(Trigger::Graceful(None));
    life.coordinate(&fake, plan(hooks));
    let report = life.wait();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!((report.hooks_run, report.hooks_panicked), (1, 1));
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_second_signal_forces_the_stop() {
    let fake = Fake::default(); // never drains
    let life = Lifecycle::new();
    life.trigger(Trigger::Signal);
    life.trigger(Trigger::Signal);
    let start = Instant::now();
    life.coordinate(&fake, plan(Vec::new()));
    let report = life.wait();
    assert!(report.forced && report.timed_out, "{report:?}");
    assert_eq!(report.exit_code(), 1);
    // Would take the 10 s shutdown timeout without the force.
    assert!(start.elapsed() < Duration::from_secs(5));
    // A forced stop gives the workers no more than a glimpse.
    assert!(lock(&fake.workers_until).unwrap() <= Instant::now() + FORCE_GRACE);
}

#[test]
fn the_api_trigger_is_idempotent_and_waits_for_the_same_report() {
    let fake = Arc::new(Fake::default());
    fake.drained.store(true, Ordering::SeqCst);
    let life = Lifecycle::new();
    let handle = ShutdownHandle::new(life.clone());
    let (l2, f2) = (life.clone(), fake.clone());
    let coordinator = thread::spawn(move || l2.coordinate(&*f2, plan(Vec::new())));
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let h = handle.clone();
            thread::spawn(move || h.shutdown())
        })
        .collect();
    let reports: Vec<ShutdownReport> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
    coordinator.join().unwrap();
    assert!(reports.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        lock(&fake.steps).iter().filter(|s| **s == "goaway").count(),
        1
    );
    assert!(!reports[0].forced);
}

#[test]
fn a_hook_that_hangs_is_reported_stuck_after_its_budget() {
    let fake = Fake::default();
    fake.drained.store(true, Ordering::SeqCst);
    let (release, gate) = bounded::<()>(0);
    let hooks: Vec<Hook> = vec![Box::new(move |_| {
        let _ = gate.recv();
    })];
    let life = Lifecycle::new();
    life.trigger(Trigger::Graceful(None));
    let p = Plan {
        hooks_budget: Duration::from_millis(50),
        ..plan(hooks)
    };
    life.coordinate(&fake, p);
    let report = life.wait();
    assert_eq!(report.stuck_threads, ["test-hooks"]);
    drop(release); // lets the hook, and its thread, end
}
