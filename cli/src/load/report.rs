//! The lines a load run prints: what it will do, and what it measured.
//! Shared by `syncrpc load` and `examples/load.rs`, so both report alike.
#![allow(dead_code)] // the example prints no progress

use std::io::{self, Write};
use std::time::Duration;

use super::driver::{Latency, Load, Outcome, Progress};

/// What the run is about to do.
pub fn plan(load: &Load) -> String {
    format!(
        "{} at {}: {} connections x {} in flight, {} B bodies, {} s after a {} ms warm-up",
        load.method,
        load.addr,
        load.connections,
        load.depth,
        load.body_len,
        load.duration.as_secs(),
        load.warmup.as_millis()
    )
}

/// One progress line: `12.0s  48211 req/s  errors 0  p50 87us  p99 1.25ms`.
pub fn progress(p: &Progress) -> String {
    if !p.measuring {
        return "warming up".to_owned();
    }
    let o = p.outcome;
    let quantiles = if o.answered > 0 {
        format!(
            "  p50 {}  p99 {}",
            Latency(o.quantile(0.5)),
            Latency(o.quantile(0.99))
        )
    } else {
        String::new()
    };
    format!(
        "{:>5.1}s  {:.0} req/s  errors {}{quantiles}  lost {}",
        p.elapsed.as_secs_f64(),
        p.rate(),
        o.failures(),
        o.lost_connections.len()
    )
}

/// The final report: rate, latency percentiles, non-OK answers by code,
/// GOAWAYs and lost connections.
pub fn write(out: &mut impl Write, load: &Load, o: &Outcome) -> io::Result<()> {
    writeln!(
        out,
        "requests  {} answered in {:.2} s: {:.0} req/s",
        o.answered,
        o.elapsed.as_secs_f64(),
        o.rate()
    )?;
    if o.answered > 0 {
        writeln!(
            out,
            "latency   p50 {}  p99 {}  p999 {}  max {}",
            Latency(o.quantile(0.5)),
            Latency(o.quantile(0.99)),
            Latency(o.quantile(0.999)),
            Latency(Duration::from_nanos(o.latency.max()))
        )?;
    }
    writeln!(out, "non-OK    {}", o.failures())?;
    for (code, n) in &o.failed {
        writeln!(out, "          {n} {code}")?;
    }
    for g in &o.goaways {
        writeln!(out, "GOAWAY    {g}")?;
    }
    if !o.lost_connections.is_empty() {
        writeln!(
            out,
            "lost      {} connections, {} requests in flight on them; first: {}",
            o.lost_connections.len(),
            o.lost_requests,
            o.lost_connections[0]
        )?;
    }
    if o.answered > 0 && o.failures() == o.answered {
        writeln!(
            out,
            "hint      no answer was OK: does the server serve {} with raw bodies?",
            load.method
        )?;
    }
    Ok(())
}

/// True when every answer was OK and no connection was lost.
pub fn all_ok(o: &Outcome) -> bool {
    o.failures() == 0 && o.lost_connections.is_empty()
}
