//! Exit statuses, one per kind of failure, and the failure a command
//! returns.

use std::process::ExitCode;

use syncrpc::{Code, Error, Execution};

/// The server answered with an error status (the call ran, or was
/// refused by it), or health is not `SERVING`, or a load saw non-OK
/// answers.
pub const FAILED: u8 = 1;
/// Bad usage: a bad flag, JSON that does not parse, an unreadable file.
/// Nothing was sent.
pub const USAGE: u8 = 2;
/// The call did not run: no server could be reached, or it refused the
/// call before running it. Safe to retry.
pub const NOT_RUN: u8 = 3;
/// The call may have run: the connection broke, or the deadline passed,
/// after it was sent. Retry only what is idempotent.
pub const MAY_HAVE_RUN: u8 = 4;
/// A bug in this tool.
pub const INTERNAL: u8 = 70;

/// Why a command failed: what to print and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl Failure {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: USAGE,
            message: message.into(),
        }
    }

    /// A failed call: its status code and message, classed by whether it
    /// may have run.
    pub fn call(err: &Error) -> Failure {
        Failure {
            status: class(err),
            message: describe(err),
        }
    }

    /// The same failure with more lines after its message.
    pub fn with_note(mut self, note: impl AsRef<str>) -> Failure {
        let note = note.as_ref();
        if !note.is_empty() {
            self.message.push('\n');
            self.message.push_str(note);
        }
        self
    }

    /// Prints the failure to stderr; returns its exit status.
    pub fn report(self) -> ExitCode {
        eprintln!("{}", self.message);
        ExitCode::from(self.status)
    }
}

/// The exit status of a failed call.
pub fn class(err: &Error) -> u8 {
    if err.kind() == syncrpc::ErrorKind::Usage {
        return USAGE;
    }
    match err.execution() {
        Execution::NotRun => NOT_RUN,
        Execution::MayHaveRun => MAY_HAVE_RUN,
        _ => FAILED,
    }
}

/// `ERROR: CODE: message`, and the causes underneath.
pub fn describe(err: &Error) -> String {
    let mut text = format!(
        "ERROR: {}: {}",
        code_name(err.code()),
        err.status().message()
    );
    if let Some(trace) = err.trace_id() {
        text.push_str(&format!("\n  trace id: {trace}"));
    }
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        text.push_str(&format!("\n  caused by: {c}"));
        cause = c.source();
    }
    text
}

/// The code's name, `INVALID_ARGUMENT`, or its number if unknown.
pub fn code_name(code: Code) -> String {
    if code.is_known() {
        code.name().to_owned()
    } else {
        format!("code {}", u32::from(code))
    }
}
