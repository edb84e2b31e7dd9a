//! `call` on a streaming method: messages in as JSON values (or raw
//! chunks), messages out as one JSON line each (or raw bytes), printed and
//! flushed as they arrive.
//!
//! Input: the body argument, `@FILE` or stdin holds a sequence of JSON
//! values separated by whitespace (NDJSON is one such sequence), each
//! value one message. From stdin they are read and sent one by one, so a
//! pipe or a terminal drives the stream; the end of stdin ends the
//! stream (END). With `--raw`, each read of stdin (at most 64 KiB) is one
//! message, and answers are written as their bytes, unseparated.

use std::borrow::Borrow;
use std::io::{BufReader, Read, StdoutLock, Write};
use std::process::ExitCode;
use std::sync::mpsc;

use serde_json::Value;
use syncrpc::client::{CallOptions, ClientStream, StreamReceiver, StreamSender};
use syncrpc::{Client, Context, Error};

use crate::call::failed;
use crate::exit::{self, Failure};
use crate::json::{self, Json};

/// The largest raw message read from the input in one piece.
const RAW_CHUNK: usize = 64 * 1024;

/// Where a stream's messages come from.
pub enum Source {
    /// The body argument or `@FILE`, read (and, as JSON, checked) before connecting.
    Given(Vec<u8>),
    /// Read as the stream goes.
    Stdin,
}

/// One streaming call: the client, the deadline, the method and the options.
pub struct StreamCall<'a> {
    pub client: &'a Client,
    pub ctx: &'a Context,
    pub path: &'a str,
    pub opts: &'a CallOptions,
}

/// A message to send, or why the input stopped making them.
type Typed = Box<dyn Iterator<Item = Result<Value, Failure>> + Send>;
type Raw = Box<dyn Iterator<Item = Result<Vec<u8>, Failure>> + Send>;

/// The JSON values of `source`, one message each.
pub fn typed_messages(source: Source) -> Typed {
    match source {
        Source::Given(body) => {
            // Checked before connecting (see `parse_values`): a failure
            // here cannot happen, but is still reported, not unwrapped.
            match json::parse_values(&body, "the body") {
                Ok(values) => Box::new(values.into_iter().map(Ok)),
                Err(f) => Box::new(std::iter::once(Err(f))),
            }
        }
        Source::Stdin => {
            let reader = BufReader::new(std::io::stdin());
            let mut n = 0u64;
            Box::new(
                serde_json::Deserializer::from_reader(reader)
                    .into_iter::<Value>()
                    .map(move |v| {
                        n += 1;
                        v.map_err(|e| json::input_error(&format!("message {n} on stdin"), &e))
                    }),
            )
        }
    }
}

/// The raw chunks of `source`: the given bytes in pieces of at most
/// [`RAW_CHUNK`], or each read of stdin.
pub fn raw_messages(source: Source) -> Raw {
    match source {
        Source::Given(body) => {
            let chunks: Vec<Vec<u8>> = body.chunks(RAW_CHUNK).map(<[u8]>::to_vec).collect();
            Box::new(chunks.into_iter().map(Ok))
        }
        Source::Stdin => {
            let mut stdin = std::io::stdin();
            let mut done = false;
            Box::new(std::iter::from_fn(move || {
                if done {
                    return None;
                }
                let mut buf = vec![0; RAW_CHUNK];
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => {
                            done = true;
                            return None;
                        }
                        Ok(n) => {
                            buf.truncate(n);
                            return Some(Ok(buf));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            done = true;
                            return Some(Err(Failure::usage(format!("cannot read stdin: {e}"))));
                        }
                    }
                }
            }))
        }
    }
}

/// Writes one answer and flushes it, so that a reader sees it at once.
fn emit(out: &mut impl Write, bytes: &[u8], newline: bool) -> Result<(), Failure> {
    out.write_all(bytes)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush())
        .map_err(|e| Failure::usage(format!("cannot write the answer: {e}")))
}

/// A line of compact JSON.
fn line(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

impl StreamCall<'_> {
    fn failed(&self, err: &Error) -> Failure {
        failed(self.client, self.ctx, self.path, err)
    }

    /// A server stream: `request` sent, each answer printed as a line.
    pub fn server_stream(&self, request: &Value) -> Result<ExitCode, Failure> {
        let answers = self
            .client
            .server_stream_with::<_, Json>(self.ctx, self.path, request, self.opts)
            .map_err(|e| self.failed(&e))?;
        let mut out = std::io::stdout().lock();
        for answer in answers {
            let Json(value) = answer.map_err(|e| self.failed(&e))?;
            emit(&mut out, &line(&value), true)?;
        }
        Ok(ExitCode::SUCCESS)
    }

    /// A raw server stream: each answer's bytes written as they come.
    pub fn raw_server_stream(&self, body: &[u8]) -> Result<ExitCode, Failure> {
        let answers = self
            .client
            .raw_server_stream(self.ctx, self.path, body, self.opts)
            .map_err(|e| self.failed(&e))?;
        let mut out = std::io::stdout().lock();
        for answer in answers {
            emit(&mut out, &answer.map_err(|e| self.failed(&e))?, false)?;
        }
        Ok(ExitCode::SUCCESS)
    }

    /// A client stream: every message sent, then the answer printed as a
    /// unary answer is.
    pub fn client_stream(&self, messages: Typed) -> Result<ExitCode, Failure> {
        let mut stream = self
            .client
            .client_stream_with::<Value, Json>(self.ctx, self.path, self.opts)
            .map_err(|e| self.failed(&e))?;
        if let Err(input) = send_all(&mut stream, messages) {
            stream.cancel();
            return Err(cancelled_by(input));
        }
        let Json(answer) = stream.finish().map_err(|e| self.failed(&e))?;
        println!("{}", json::pretty(&answer));
        Ok(ExitCode::SUCCESS)
    }

    /// A raw client stream: every chunk sent, the answer's bytes written.
    pub fn raw_client_stream(&self, messages: Raw) -> Result<ExitCode, Failure> {
        let mut stream = self
            .client
            .raw_client_stream(self.ctx, self.path, self.opts)
            .map_err(|e| self.failed(&e))?;
        if let Err(input) = send_all(&mut stream, messages) {
            stream.cancel();
            return Err(cancelled_by(input));
        }
        let answer = stream.finish().map_err(|e| self.failed(&e))?;
        emit(&mut std::io::stdout().lock(), &answer, false)?;
        Ok(ExitCode::SUCCESS)
    }

    /// A bidirectional stream: the messages sent from a thread of their
    /// own while each answer is printed as a line as it arrives.
    pub fn bidi_stream(&self, messages: Typed) -> Result<ExitCode, Failure> {
        let (tx, rx) = self
            .client
            .bidi_stream_with::<Value, Json>(self.ctx, self.path, self.opts)
            .map_err(|e| self.failed(&e))?;
        let bad_input = feed(tx, messages);
        self.print_all(rx, &bad_input, |out, Json(value)| {
            emit(out, &line(&value), true)
        })
    }

    /// A raw bidirectional stream: chunks in, answers' bytes out.
    pub fn raw_bidi_stream(&self, messages: Raw) -> Result<ExitCode, Failure> {
        let (tx, rx) = self
            .client
            .raw_bidi_stream(self.ctx, self.path, self.opts)
            .map_err(|e| self.failed(&e))?;
        let bad_input = feed(tx, messages);
        self.print_all(rx, &bad_input, |out, bytes| emit(out, &bytes, false))
    }

    /// Prints each answer of `rx` as it arrives; at an error, says why
    /// the stream ended: bad input, when the feeding thread met some.
    fn print_all<R>(
        &self,
        rx: StreamReceiver<R>,
        bad_input: &mpsc::Receiver<Failure>,
        print: impl Fn(&mut StdoutLock<'static>, R) -> Result<(), Failure>,
    ) -> Result<ExitCode, Failure> {
        let mut out = std::io::stdout().lock();
        for answer in rx {
            match answer {
                Ok(answer) => print(&mut out, answer)?,
                Err(e) => {
                    return Err(match bad_input.try_recv() {
                        Ok(input) => cancelled_by(input),
                        Err(_) => self.failed(&e),
                    })
                }
            }
        }
        // The server may end the stream before the input ends: that is
        // its answer, and the rest of the input goes unread.
        Ok(ExitCode::SUCCESS)
    }
}

/// Sends every message of `messages` on `stream`; stops quietly when the
/// stream ended (its status comes from `finish`), and hands back bad
/// input for the caller to cancel the stream with.
fn send_all<T: ?Sized, R, M: Borrow<T>>(
    stream: &mut ClientStream<T, R>,
    messages: Box<dyn Iterator<Item = Result<M, Failure>> + Send>,
) -> Result<(), Failure> {
    for msg in messages {
        if stream.send(msg?.borrow()).is_err() {
            break;
        }
    }
    Ok(())
}

/// Sends `messages` on `tx` from a thread of its own, then END. Bad
/// input cancels the stream, and is said on the returned channel first,
/// so that the receiving side finds it when the stream ends CANCELLED.
fn feed<T, M>(
    mut tx: StreamSender<T>,
    messages: Box<dyn Iterator<Item = Result<M, Failure>> + Send>,
) -> mpsc::Receiver<Failure>
where
    T: ?Sized + 'static,
    M: Borrow<T> + 'static,
    StreamSender<T>: Send,
{
    let (bad_input, input_failure) = mpsc::channel();
    std::thread::spawn(move || {
        for msg in messages {
            match msg {
                Ok(m) if tx.send(m.borrow()).is_ok() => {}
                // The stream ended: the receiver reports how.
                Ok(_) => return,
                Err(input) => {
                    let _ = bad_input.send(input);
                    tx.cancel();
                    return;
                }
            }
        }
        let _ = tx.finish();
    });
    input_failure
}

/// Bad input met after the stream opened: the stream was cancelled, and
/// the method may have run on the messages before it.
fn cancelled_by(input: Failure) -> Failure {
    Failure {
        status: exit::MAY_HAVE_RUN,
        message: format!("{}; the stream was cancelled", input.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_input_is_cut_into_chunks() {
        let body = vec![7u8; RAW_CHUNK * 2 + 1];
        let sizes: Vec<usize> = raw_messages(Source::Given(body))
            .map(|c| c.unwrap().len())
            .collect();
        assert_eq!(sizes, [RAW_CHUNK, RAW_CHUNK, 1]);
    }
}
