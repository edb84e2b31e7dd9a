//! How a unary call or a ONEWAY is sent: the attempts, one endpoint after
//! another as the retry budget allows, and the check of the answer.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;

use super::body::{inflate, peer_error};
use super::call_plan::{check_live, timeout_ms, too_large};
use super::connection::Outgoing;
use super::retry::RetryBudget;
use super::slot::Reply;
use super::{CallOptions, Client};
use crate::codec::{Encoding, Flags, FrameType};
use crate::context::Context;
use crate::error::{Error, Execution};
use crate::status::{Code, Status};

impl Client {
    pub(super) fn invoke_oneway(
        &self,
        ctx: &Context,
        method: &str,
        encoding: Encoding,
        body: &[u8],
        opts: &CallOptions,
    ) -> Result<(), Error> {
        self.invoke(ctx, method, encoding, body, opts, FrameType::Oneway)
            .map(drop)
    }

    /// Sends one request (with retries) and returns the OK answer; for
    /// ONEWAY, an empty one once the frame is queued.
    pub(super) fn invoke(
        &self,
        ctx: &Context,
        method: &str,
        encoding: Encoding,
        body: &[u8],
        opts: &CallOptions,
        frame_type: FrameType,
    ) -> Result<(Reply, SocketAddr), Error> {
        let config = &self.inner.config;
        let plan = self.plan(ctx, method, opts)?;
        let deadline = plan.deadline;
        let trace_id = plan.trace_id;
        if body.len() > config.max_body {
            return Err(too_large("request body", body.len(), config.max_body));
        }
        let (body, compression) = plan.compress(body);
        let body = &body[..];
        let mut meta = self.request_meta(method, &plan, opts, false)?;
        let flags = Flags::new(compression, encoding);
        let mut budget = RetryBudget::new(opts.retry_or(config.retry));
        let mut avoid = None;
        loop {
            let conn = self
                .inner
                .balancer
                .pick(avoid, deadline, ctx, opts.is_wait_for_ready())?;
            let peer = conn.peer();
            meta.timeout_ms = deadline.map_or(0, |d| timeout_ms(d, Instant::now()));
            let out = Outgoing {
                frame_type,
                flags,
                meta: &meta,
                body,
            };
            let result = if frame_type == FrameType::Oneway {
                conn.oneway(&out).map(|()| Reply::pong())
            } else {
                conn.call(&out, deadline, ctx)
                    .and_then(|r| self.check_reply(method, r))
            };
            drop(conn);
            let err = match result {
                Ok(mut reply) => {
                    // A server may leave the trace id out of OK answers.
                    reply.trace_id = reply.trace_id.or(trace_id);
                    return Ok((reply, peer));
                }
                Err(e) => match (e.trace_id(), trace_id) {
                    (None, Some(t)) => e.with_trace_id(t),
                    _ => e,
                },
            };
            let live = check_live(ctx, deadline, Instant::now()).is_ok();
            if !live || !budget.take(&err) {
                return Err(err);
            }
            debug!("{method}: retrying after {peer} failed: {err}");
            avoid = Some(peer);
        }
    }

    /// A non-OK answer as an error; an answer whose body was too large to
    /// read as an error too.
    fn check_reply(&self, method: &str, reply: Reply) -> Result<Reply, Error> {
        if reply.code != Code::OK {
            let status = Status::new(reply.code, reply.message).with_metadata(reply.metadata);
            let err = Error::from(status);
            return Err(match reply.trace_id {
                Some(t) => err.with_trace_id(t),
                None => err,
            });
        }
        if let Some(len) = reply.body_too_large {
            let mut err = too_large(
                &format!("{method}: response body"),
                len as usize,
                self.inner.config.max_body,
            );
            err = peer_error(err.into_status(), Execution::Ran);
            return Err(err);
        }
        Ok(reply)
    }

    /// The reply's body, decompressed within the body limit.
    pub(super) fn inflate<'r>(
        &self,
        method: &str,
        reply: &'r Reply,
    ) -> Result<Cow<'r, [u8]>, Error> {
        inflate(
            method,
            "the response",
            reply.flags,
            &reply.body,
            self.inner.config.max_body,
        )
    }
}
