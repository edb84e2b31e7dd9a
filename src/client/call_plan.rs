//! What a call, unary or stream, resolves and checks before its first
//! attempt: its deadline, trace id and compression (its [`Plan`]), the meta
//! of its REQUEST, and the checks that refuse it unsent.

use std::borrow::Cow;
use std::time::Instant;

use super::builder::{ClientProtocol, Credentials};
use super::{CallOptions, Client};
use crate::codec::{self, Compression, RequestMeta};
use crate::context::{CancelReason, Context};
use crate::error::{Error, ErrorKind, Execution};
use crate::status::Status;
use crate::trace::TraceId;

impl Client {
    /// The earliest of the context's deadline, the call's deadline and
    /// timeout, and the client's default timeout.
    pub(super) fn deadline(
        &self,
        ctx: &Context,
        opts: &CallOptions,
        now: Instant,
    ) -> Option<Instant> {
        [opts.get_timeout(), self.inner.config.timeouts.call]
            .into_iter()
            .flatten()
            .filter_map(|t| now.checked_add(t))
            .chain(ctx.deadline())
            .chain(opts.get_deadline())
            .min()
    }

    /// Checks a call's method and deadline and resolves its deadline,
    /// trace id and compression: what unary calls and streams share.
    pub(super) fn plan(
        &self,
        ctx: &Context,
        method: &str,
        opts: &CallOptions,
    ) -> Result<Plan, Error> {
        let config = &self.inner.config;
        check_method(method)?;
        let start = Instant::now();
        let deadline = self.deadline(ctx, opts, start);
        check_live(ctx, deadline, start)?;
        let compression = match config.protocol {
            ClientProtocol::Native => opts.get_compression().unwrap_or(config.compression),
            // The protocol has no way to say a body is compressed.
            ClientProtocol::MsgpackRpc => Compression::None,
        };
        Ok(Plan {
            deadline,
            trace_id: opts.get_trace_id().or_else(|| ctx.trace_id()),
            compression,
            compress_min_size: opts.compress_min_size_or(config.compress_min_size),
        })
    }

    /// The meta of a call's REQUEST (its `timeout_ms` is set per attempt),
    /// refused if the server would not take it.
    pub(super) fn request_meta<'a>(
        &'a self,
        method: &'a str,
        plan: &'a Plan,
        opts: &CallOptions,
        stream: bool,
    ) -> Result<RequestMeta<'a>, Error> {
        let config = &self.inner.config;
        let meta = RequestMeta {
            method,
            timeout_ms: 0,
            trace_id: plan.trace_id.as_ref().map(|t| t.as_str()),
            caller: config.caller.as_deref(),
            md: with_credentials(opts.get_metadata(), config.credentials.as_ref()),
            stream,
        };
        check_meta_size(&meta, config.max_meta)?;
        Ok(meta)
    }
}

/// What a call sends besides its body, resolved once before its first
/// attempt.
pub(super) struct Plan {
    pub(super) deadline: Option<Instant>,
    pub(super) trace_id: Option<TraceId>,
    /// The compression asked for; bodies shorter than
    /// `compress_min_size` go uncompressed.
    pub(super) compression: Compression,
    compress_min_size: usize,
}

impl Plan {
    /// `body` as it goes on the wire, and its compression.
    pub(super) fn compress<'b>(&self, body: &'b [u8]) -> (Cow<'b, [u8]>, Compression) {
        if self.compression == Compression::None || body.len() < self.compress_min_size {
            return (Cow::Borrowed(body), Compression::None);
        }
        let mut out = Vec::with_capacity(body.len() / 2 + 64);
        codec::compress(self.compression, body, &mut out);
        (Cow::Owned(out), self.compression)
    }
}

pub(super) fn too_large(what: &str, len: usize, limit: usize) -> Error {
    let status = Status::resource_exhausted(format!("{what} too large: {len} > {limit} bytes"));
    Error::new(ErrorKind::Usage, status).with_execution(Execution::NotRun)
}

/// `Err` if the context is already done or the deadline already passed.
pub(super) fn check_live(
    ctx: &Context,
    deadline: Option<Instant>,
    now: Instant,
) -> Result<(), Error> {
    if let Some(reason) = ctx.cancel_reason() {
        let kind = match reason {
            CancelReason::DeadlineExceeded => ErrorKind::Timeout,
            _ => ErrorKind::Cancelled,
        };
        return Err(Error::new(kind, reason.to_status()).with_execution(Execution::NotRun));
    }
    if deadline.is_some_and(|d| now >= d) {
        let status = Status::deadline_exceeded("the deadline passed before the call was sent");
        return Err(Error::new(ErrorKind::Timeout, status).with_execution(Execution::NotRun));
    }
    Ok(())
}

/// Checks that a method name is `/service/method`, as the server requires.
fn check_method(method: &str) -> Result<(), Error> {
    let ok = method
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, name)| {
            !service.is_empty() && !name.is_empty() && !name.contains('/')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid method name {method:?}: expected /service/method"
        )))
    }
}

/// Refuses a meta the server would answer by closing the connection.
fn check_meta_size(meta: &RequestMeta<'_>, limit: usize) -> Result<(), Error> {
    // A cheap upper bound first: MessagePack adds at most 5 bytes per
    // string and the fixed keys take 40.
    let bound = 64
        + meta.method.len()
        + meta.trace_id.map_or(0, str::len)
        + meta.caller.map_or(0, str::len)
        + meta
            .md
            .iter()
            .map(|(k, v)| k.len() + v.as_bytes().len() + 10)
            .sum::<usize>();
    if bound <= limit {
        return Ok(());
    }
    let len = meta.to_vec().len();
    if len <= limit {
        return Ok(());
    }
    Err(too_large("request meta", len, limit))
}

/// The remaining budget in whole milliseconds, rounded up so that the
/// server never sees less than is left, at least 1 (0 means none on the
/// wire) and at most what the field holds.
pub(super) fn timeout_ms(deadline: Instant, now: Instant) -> u32 {
    let left = deadline.saturating_duration_since(now);
    let ms = left.as_nanos().div_ceil(1_000_000);
    ms.clamp(1, u128::from(u32::MAX)) as u32
}

/// A call's metadata with the client's credentials added, unless the call
/// sets its own.
fn with_credentials(md: &crate::Metadata, creds: Option<&Credentials>) -> crate::Metadata {
    let mut md = md.clone();
    if let Some(c) = creds {
        if md.get(Credentials::KEY).is_none() {
            md.insert(Credentials::KEY, c.header_value());
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;
    use std::time::Duration;

    #[test]
    fn timeout_ms_rounds_up_and_is_never_zero() {
        let now = Instant::now();
        assert_eq!(timeout_ms(now, now), 1);
        assert_eq!(timeout_ms(now + Duration::from_micros(1), now), 1);
        assert_eq!(timeout_ms(now + Duration::from_micros(1001), now), 2);
        assert_eq!(timeout_ms(now + Duration::from_millis(250), now), 250);
        let far = now + Duration::from_secs(u64::from(u32::MAX));
        assert_eq!(timeout_ms(far, now), u32::MAX);
    }

    #[test]
    fn method_names_need_two_segments() {
        assert!(check_method("/echo.Echo/Say").is_ok());
        for bad in [
            "",
            "/",
            "echo/Say",
            "/echo.Echo",
            "/echo.Echo/",
            "//Say",
            "/a/b/c",
        ] {
            let err = check_method(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Usage, "{bad}");
            assert!(err.is_not_run());
        }
    }

    #[test]
    fn deadline_is_the_earliest_of_context_options_and_default() {
        let client = Client::builder()
            .addr("127.0.0.1:1")
            .default_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let now = Instant::now();
        let bg = Context::background();
        let none = CallOptions::new();
        let secs = |n| now + Duration::from_secs(n);
        assert_eq!(client.deadline(&bg, &none, now), Some(secs(10)));
        let opts = CallOptions::new().timeout(Duration::from_secs(1));
        assert_eq!(client.deadline(&bg, &opts, now), Some(secs(1)));
        let opts = CallOptions::new()
            .deadline(secs(2))
            .timeout(Duration::from_secs(3));
        assert_eq!(client.deadline(&bg, &opts, now), Some(secs(2)));
        let ctx = bg.with_deadline(now + Duration::from_millis(5));
        assert_eq!(
            client.deadline(&ctx, &opts, now),
            Some(now + Duration::from_millis(5))
        );
        let plain = Client::connect("127.0.0.1:1").unwrap();
        assert_eq!(plain.deadline(&bg, &none, now), None);
    }

    #[test]
    fn oversized_meta_is_refused_before_sending() {
        let mut meta = RequestMeta::new("/a.B/c");
        meta.md.insert("k", "v".repeat(20 * 1024));
        let err = check_meta_size(&meta, 16 * 1024).unwrap_err();
        assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED);
        assert!(err.is_not_run());
        assert!(err.to_string().contains("request meta too large"), "{err}");
        meta.md.insert("k", "v".repeat(100));
        assert!(check_meta_size(&meta, 16 * 1024).is_ok());
    }
}
