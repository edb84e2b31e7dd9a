//! Flow control of one direction of one stream (`docs/protocol.md`,
//! "Flow control"): the window arithmetic both ends of a stream keep.
//!
//! Each direction of a stream has a window of MESSAGE body bytes, as sent,
//! that starts at [`INITIAL_WINDOW`]. The sender keeps a [`SendWindow`]:
//! it may send while the window is above 0, subtracts each message's length
//! (so one message may overdraw it), and adds what the receiver grants with
//! WINDOW frames. The receiver keeps a [`RecvWindow`]: the same window as
//! it sees it, plus the bytes it holds for the application and the bytes
//! the application consumed but it has not yet granted back.
//!
//! Both types are plain arithmetic, with no locking and no I/O: the owner
//! decides who waits and who writes the frames. They are `Copy`, so a
//! stream's state can keep them inline.
//!
//! # Examples
//!
//! A sender and a receiver of one direction, with the frames between them
//! left to the reader's imagination:
//!
//! ```
//! use syncrpc::flow_control::{RecvWindow, SendWindow, INITIAL_WINDOW};
//!
//! let mut tx = SendWindow::new();
//! let mut rx = RecvWindow::new();
//! // 300 KiB in one message: more than the window, but it was open.
//! assert!(tx.may_send());
//! tx.sent(300 * 1024).unwrap();
//! rx.received(300 * 1024).unwrap();
//! assert!(!tx.may_send());
//! assert_eq!(rx.held(), 300 * 1024);
//!
//! // The application reads the message: the receiver grants it back.
//! let grant = rx.consumed(300 * 1024).expect("enough to grant");
//! tx.granted(grant).unwrap();
//! assert_eq!(tx.window(), i64::from(INITIAL_WINDOW));
//! assert_eq!(tx.window(), rx.window());
//! ```

use std::fmt;

use crate::codec::{WindowMeta, MAX_WINDOW};

/// The window of each direction of a new stream: 256 KiB.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// How many consumed bytes a [`RecvWindow`] gathers before it grants them
/// back: half the initial window. Granting each message on its own would
/// cost a WINDOW frame per MESSAGE; waiting for half keeps the sender's
/// window open while the grant travels, and never waits for more than the
/// application can consume (see [`RecvWindow::consumed`]).
pub const GRANT_THRESHOLD: u32 = INITIAL_WINDOW / 2;

/// A rule of flow control broken.
///
/// Received from the peer, each is a connection error. From this side's
/// own sender, [`FlowControlError::WindowClosed`] is a bug: it should have
/// waited for [`SendWindow::may_send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControlError {
    /// A message was sent while the window was at or below 0.
    WindowClosed {
        /// The window when it was sent.
        window: i64,
        /// The message's length as sent.
        len: u32,
    },
    /// A grant would push the window past [`MAX_WINDOW`].
    Overflow {
        /// The window before the grant.
        window: i64,
        /// The bytes granted.
        grant: u32,
    },
}

impl fmt::Display for FlowControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowControlError::WindowClosed { window, len } => write!(
                f,
                "MESSAGE of {len} bytes sent with the stream's window at {window}"
            ),
            FlowControlError::Overflow { window, grant } => write!(
                f,
                "WINDOW of {grant} bytes pushes the stream's window past {MAX_WINDOW}: \
                 {window} + {grant}"
            ),
        }
    }
}

impl std::error::Error for FlowControlError {}

/// Adds `grant` to `window`, refusing a window past [`MAX_WINDOW`].
fn add(window: &mut i64, grant: WindowMeta) -> Result<(), FlowControlError> {
    let grown = *window + i64::from(grant.bytes());
    if grown > i64::from(MAX_WINDOW) {
        return Err(FlowControlError::Overflow {
            window: *window,
            grant: grant.bytes(),
        });
    }
    *window = grown;
    Ok(())
}

/// Subtracts a message of `len` bytes from `window`, which must be open.
fn take(window: &mut i64, len: u32) -> Result<(), FlowControlError> {
    if *window <= 0 {
        return Err(FlowControlError::WindowClosed {
            window: *window,
            len,
        });
    }
    *window -= i64::from(len);
    Ok(())
}

/// The sending end's window of one direction of one stream.
///
/// # Examples
///
/// ```
/// use syncrpc::codec::WindowMeta;
/// use syncrpc::flow_control::{FlowControlError, SendWindow};
///
/// let mut tx = SendWindow::new();
/// tx.sent(256 * 1024).unwrap();
/// assert!(!tx.may_send());
/// assert_eq!(tx.sent(1), Err(FlowControlError::WindowClosed { window: 0, len: 1 }));
/// tx.granted(WindowMeta::new(10).unwrap()).unwrap();
/// assert!(tx.may_send());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendWindow {
    window: i64,
}

impl Default for SendWindow {
    fn default() -> Self {
        SendWindow {
            window: i64::from(INITIAL_WINDOW),
        }
    }
}

impl SendWindow {
    /// The window of a new stream, [`INITIAL_WINDOW`].
    pub fn new() -> SendWindow {
        SendWindow::default()
    }

    /// The window in bytes; below 0 after a message overdrew it.
    pub fn window(&self) -> i64 {
        self.window
    }

    /// True while a message may be sent: the window is above 0. A message
    /// of any length may then go, even one longer than the window.
    pub fn may_send(&self) -> bool {
        self.window > 0
    }

    /// Records a message of `len` bytes (its body as sent). Refused,
    /// without a change, if the window is at or below 0.
    pub fn sent(&mut self, len: u32) -> Result<(), FlowControlError> {
        take(&mut self.window, len)
    }

    /// Records the peer's grant. A grant that would push the window past
    /// [`MAX_WINDOW`] is refused without a change: a connection error.
    pub fn granted(&mut self, grant: WindowMeta) -> Result<(), FlowControlError> {
        add(&mut self.window, grant)
    }
}

/// The receiving end's window of one direction of one stream, and what it
/// holds for the application.
///
/// The window, the bytes held and the bytes consumed but not yet granted
/// always add up to [`INITIAL_WINDOW`], and a message is accepted only
/// while the window is above 0. So a receiver holds at most the initial
/// window plus one message, however slowly its application reads.
///
/// # Examples
///
/// ```
/// use syncrpc::flow_control::{FlowControlError, RecvWindow, GRANT_THRESHOLD};
///
/// let mut rx = RecvWindow::new();
/// rx.received(1000).unwrap();
/// // Too little to be worth a WINDOW frame yet.
/// assert_eq!(rx.consumed(1000), None);
/// rx.received(GRANT_THRESHOLD).unwrap();
/// let grant = rx.consumed(GRANT_THRESHOLD).unwrap();
/// assert_eq!(grant.bytes(), GRANT_THRESHOLD + 1000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvWindow {
    window: i64,
    /// Bytes received and not yet consumed by the application.
    held: u64,
    /// Bytes consumed and not yet granted back.
    ungranted: u64,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow {
            window: i64::from(INITIAL_WINDOW),
            held: 0,
            ungranted: 0,
        }
    }
}

impl RecvWindow {
    /// The window of a new stream, [`INITIAL_WINDOW`], with nothing held.
    pub fn new() -> RecvWindow {
        RecvWindow::default()
    }

    /// The window in bytes as this end has granted it; below 0 after a
    /// message overdrew it.
    pub fn window(&self) -> i64 {
        self.window
    }

    /// Bytes received and not yet consumed by the application.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Records a message of `len` bytes (its body as sent) from the peer.
    /// A message that arrives with the window at or below 0 is refused
    /// without a change: a connection error.
    pub fn received(&mut self, len: u32) -> Result<(), FlowControlError> {
        take(&mut self.window, len)?;
        self.held += u64::from(len);
        Ok(())
    }

    /// Records that the application consumed (or dropped) `len` held
    /// bytes, and returns the grant to send in a WINDOW frame once at least
    /// [`GRANT_THRESHOLD`] bytes are waiting to be granted.
    ///
    /// This never stalls a stream: when the peer must wait (window at or
    /// below 0) and the application has consumed everything, at least the
    /// whole initial window waits to be granted, more than the threshold.
    ///
    /// # Panics
    ///
    /// If `len` is more than [`RecvWindow::held`]: the caller consumed
    /// bytes it never received.
    pub fn consumed(&mut self, len: u32) -> Option<WindowMeta> {
        let len = u64::from(len);
        assert!(
            len <= self.held,
            "consumed {len} bytes, but only {} are held",
            self.held
        );
        self.held -= len;
        self.ungranted += len;
        if self.ungranted < u64::from(GRANT_THRESHOLD) {
            return None;
        }
        let grant = WindowMeta::new(self.ungranted.min(u64::from(MAX_WINDOW)) as u32)?;
        // The three quantities add up to the initial window, so the
        // window after the grant is at most that: no overflow.
        add(&mut self.window, grant).ok()?;
        self.ungranted -= u64::from(grant.bytes());
        Some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INITIAL: i64 = INITIAL_WINDOW as i64;

    fn grant(n: u32) -> WindowMeta {
        WindowMeta::new(n).unwrap()
    }

    #[test]
    fn both_ends_start_at_256_kib() {
        assert_eq!(INITIAL_WINDOW, 262_144);
        assert_eq!(SendWindow::new().window(), 262_144);
        assert_eq!(RecvWindow::new().window(), 262_144);
        assert_eq!(RecvWindow::new().held(), 0);
    }

    #[test]
    fn a_sender_may_send_only_while_the_window_is_above_zero() {
        let mut tx = SendWindow::new();
        tx.sent(INITIAL_WINDOW - 1).unwrap();
        assert_eq!(tx.window(), 1);
        assert!(tx.may_send());
        tx.sent(1).unwrap();
        assert_eq!(tx.window(), 0);
        assert!(!tx.may_send());
        assert_eq!(
            tx.sent(0),
            Err(FlowControlError::WindowClosed { window: 0, len: 0 })
        );
        assert_eq!(tx.window(), 0, "a refused send changes nothing");
    }

    #[test]
    fn one_message_may_overdraw_the_window() {
        let mut tx = SendWindow::new();
        tx.sent(INITIAL_WINDOW - 1).unwrap();
        // One byte of window left: a 10 MiB message still goes.
        tx.sent(10 << 20).unwrap();
        assert_eq!(tx.window(), 1 - (10 << 20));
        assert!(!tx.may_send());
        assert_eq!(
            tx.sent(1),
            Err(FlowControlError::WindowClosed {
                window: 1 - (10 << 20),
                len: 1
            })
        );
    }

    #[test]
    fn a_grant_to_an_overdrawn_window_may_leave_it_closed() {
        let mut tx = SendWindow::new();
        tx.sent(INITIAL_WINDOW + 100).unwrap();
        tx.granted(grant(100)).unwrap();
        assert_eq!(tx.window(), 0);
        assert!(!tx.may_send());
        tx.granted(grant(1)).unwrap();
        assert!(tx.may_send());
    }

    #[test]
    fn a_grant_may_reach_but_not_pass_the_largest_window() {
        let mut tx = SendWindow::new();
        tx.granted(grant(MAX_WINDOW - INITIAL_WINDOW)).unwrap();
        assert_eq!(tx.window(), i64::from(MAX_WINDOW));
        assert_eq!(
            tx.granted(grant(1)),
            Err(FlowControlError::Overflow {
                window: i64::from(MAX_WINDOW),
                grant: 1
            })
        );
        assert_eq!(tx.window(), i64::from(MAX_WINDOW), "unchanged");
        // From a negative window, the largest grant is fine.
        let mut tx = SendWindow::new();
        tx.sent(INITIAL_WINDOW + 1).unwrap();
        tx.granted(grant(MAX_WINDOW)).unwrap();
        assert_eq!(tx.window(), i64::from(MAX_WINDOW) - 1);
    }

    #[test]
    fn a_grant_is_never_zero_or_past_the_largest_window() {
        assert!(WindowMeta::new(0).is_none());
        assert!(WindowMeta::new(MAX_WINDOW + 1).is_none());
        assert!(WindowMeta::new(u32::MAX).is_none());
        assert_eq!(WindowMeta::new(MAX_WINDOW).unwrap().bytes(), 2_147_483_647);
    }

    #[test]
    fn the_errors_say_what_was_wrong() {
        let closed = FlowControlError::WindowClosed { window: -5, len: 7 };
        assert_eq!(
            closed.to_string(),
            "MESSAGE of 7 bytes sent with the stream's window at -5"
        );
        let overflow = FlowControlError::Overflow {
            window: 2_000_000_000,
            grant: 200_000_000,
        };
        assert_eq!(
            overflow.to_string(),
            "WINDOW of 200000000 bytes pushes the stream's window past 2147483647: \
             2000000000 + 200000000"
        );
    }

    #[test]
    fn a_receiver_refuses_a_message_sent_on_a_closed_window() {
        let mut rx = RecvWindow::new();
        rx.received(INITIAL_WINDOW + 10).unwrap();
        assert_eq!(rx.window(), -10);
        assert_eq!(
            rx.received(1),
            Err(FlowControlError::WindowClosed {
                window: -10,
                len: 1
            })
        );
        assert_eq!(rx.held(), u64::from(INITIAL_WINDOW) + 10, "unchanged");
    }

    #[test]
    fn a_receiver_grants_back_what_was_consumed_once_it_is_worth_a_frame() {
        let mut rx = RecvWindow::new();
        rx.received(GRANT_THRESHOLD).unwrap();
        assert_eq!(rx.consumed(GRANT_THRESHOLD - 1), None);
        assert_eq!(rx.window(), INITIAL - i64::from(GRANT_THRESHOLD));
        let g = rx.consumed(1).expect("the threshold is reached");
        assert_eq!(g.bytes(), GRANT_THRESHOLD);
        assert_eq!(rx.window(), INITIAL);
        assert_eq!(rx.held(), 0);
        // Nothing left over to grant twice.
        rx.received(10).unwrap();
        assert_eq!(rx.consumed(10), None);
    }

    #[test]
    #[should_panic(expected = "consumed 1 bytes, but only 0 are held")]
    fn consuming_more_than_held_is_a_bug() {
        RecvWindow::new().consumed(1);
    }

    /// One step of a simulated stream: the sender sends a message of the
    /// given length if it may, or the application consumes a message.
    #[derive(Clone, Debug)]
    enum Step {
        Send(u32),
        Consume,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                (1u32..(1 << 20)).prop_map(Step::Send),
                (0u32..64).prop_map(Step::Send),
                Just(Step::Consume),
            ],
            0..200,
        )
    }

    proptest! {
        /// A sender and a receiver that follow the rules: the receiver
        /// never refuses a message, holds at most the initial window plus
        /// one message, and the two windows agree once grants arrive.
        /// When the sender must wait and the application has read
        /// everything, a grant is on its way: the stream never stalls.
        #[test]
        fn a_sender_and_receiver_that_follow_the_rules_agree(steps in steps()) {
            const MAX_MESSAGE: u64 = 1 << 20;
            let mut tx = SendWindow::new();
            let mut rx = RecvWindow::new();
            let mut queue = std::collections::VecDeque::new();
            for step in steps {
                match step {
                    Step::Send(len) if tx.may_send() => {
                        tx.sent(len).unwrap();
                        rx.received(len).unwrap();
                        queue.push_back(len);
                    }
                    Step::Send(_) => {}
                    Step::Consume => {
                        if let Some(len) = queue.pop_front() {
                            if let Some(g) = rx.consumed(len) {
                                tx.granted(g).unwrap();
                            }
                        }
                    }
                }
                prop_assert!(rx.held() <= u64::from(INITIAL_WINDOW) + MAX_MESSAGE);
                prop_assert_eq!(tx.window(), rx.window());
                if queue.is_empty() {
                    prop_assert!(tx.may_send(), "stalled: {:?}", rx);
                }
            }
        }
    }
}
