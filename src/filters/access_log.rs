//! One log line per request.

use std::time::Instant;

use crate::context::Context;
use crate::filter::{Filter, Next, Reply, Request};
use crate::status::Code;

/// Logs every request through the `log` crate, under the target
/// `syncrpc::access`: method, status code, latency, trace id and peer.
///
/// ```text
/// /echo.Echo/Say OK 87us trace=1b4e28ba-2fa1-41d2-883f-0016d3cca427 peer=127.0.0.1:53122
/// ```
///
/// Successful requests are logged at `info` and failed ones at `warn` by
/// default; both levels can be changed.
///
/// # Examples
///
/// ```
/// use syncrpc::filters::AccessLog;
/// use syncrpc::Server;
///
/// let builder = Server::builder()
///     .filter(AccessLog::new().ok_level(log::Level::Debug));
/// # let _ = builder;
/// ```
#[derive(Clone, Debug)]
pub struct AccessLog {
    ok_level: log::Level,
    error_level: log::Level,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog::new()
    }
}

impl AccessLog {
    /// An access log at `info` for successes and `warn` for errors.
    pub fn new() -> AccessLog {
        AccessLog {
            ok_level: log::Level::Info,
            error_level: log::Level::Warn,
        }
    }

    /// The level of lines for successful requests.
    pub fn ok_level(mut self, level: log::Level) -> AccessLog {
        self.ok_level = level;
        self
    }

    /// The level of lines for failed requests.
    pub fn error_level(mut self, level: log::Level) -> AccessLog {
        self.error_level = level;
        self
    }
}

impl Filter for AccessLog {
    fn call(&self, ctx: &Context, req: Request, next: Next<'_>) -> Reply {
        let start = Instant::now();
        let reply = next.run(ctx, req);
        let code = match &reply {
            Ok(_) => Code::OK,
            Err(status) => status.code(),
        };
        let level = if code.is_ok() {
            self.ok_level
        } else {
            self.error_level
        };
        if log::log_enabled!(target: "syncrpc::access", level) {
            let peer = ctx
                .peer_addr()
                .map_or_else(|| "-".to_owned(), |a| a.to_string());
            let trace = ctx.trace_id();
            let trace = trace.as_ref().map_or("-", |t| t.as_str());
            let micros = start.elapsed().as_micros();
            match &reply {
                Err(status) if !status.message().is_empty() => log::log!(
                    target: "syncrpc::access",
                    level,
                    "{} {code:?} {micros}us trace={trace} peer={peer} message={:?}",
                    ctx.method(),
                    status.message()
                ),
                _ => log::log!(
                    target: "syncrpc::access",
                    level,
                    "{} {code:?} {micros}us trace={trace} peer={peer}",
                    ctx.method()
                ),
            }
        }
        reply
    }
}
