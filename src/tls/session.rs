//! One TLS connection's state, driven from bytes rather than a socket.
//!
//! The connection's reader hands in the raw bytes it read
//! ([`Session::ingest`]) and gets plaintext out; whoever writes hands in
//! plaintext ([`Session::seal`]) and gets the raw bytes to put on the
//! socket. Nothing here does I/O, so the lock around a session is never
//! held across a blocking call: thread mode's reader and writer, event
//! mode's loop and the workers that write all take turns on it briefly.

use std::io::{self, Read, Write};

use bytes::{BufMut, BytesMut};

/// What one [`Session::ingest`] produced besides plaintext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ingested {
    /// The peer sent `close_notify`: no more plaintext will come.
    pub eof: bool,
    /// TLS has bytes of its own to send (handshake, alert, tickets).
    pub has_output: bool,
    /// The handshake finished during this call.
    pub handshake_done: bool,
}

/// A rustls connection, client or server, fed and drained through buffers.
pub(crate) struct Session {
    conn: rustls::Connection,
}

impl Session {
    pub fn new(conn: impl Into<rustls::Connection>) -> Session {
        let mut conn = conn.into();
        // Our own limits bound what is queued; rustls must not refuse it.
        conn.set_buffer_limit(None);
        Session { conn }
    }

    pub fn conn(&self) -> &rustls::Connection {
        &self.conn
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feeds `raw` into the session and appends the plaintext it yields
    /// to `out`. An error is fatal to the connection; whatever alert TLS
    /// queued for the peer is still available from [`Session::seal`].
    pub fn ingest(
        &mut self,
        mut raw: &[u8],
        out: &mut BytesMut,
    ) -> Result<Ingested, rustls::Error> {
        let was_handshaking = self.conn.is_handshaking();
        let mut result = Ingested::default();
        while !raw.is_empty() {
            // read_tls takes at most what its buffers allow per call.
            match self.conn.read_tls(&mut raw) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(rustls::Error::General(format!("reading TLS records: {e}")));
                }
            }
            let state = self.conn.process_new_packets()?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = out.len();
                out.resize(at + n, 0);
                let got = self.conn.reader().read(&mut out[at..]).unwrap_or(0);
                out.truncate(at + got);
            }
            if state.peer_has_closed() {
                result.eof = true;
                break;
            }
        }
        result.has_output = self.conn.wants_write();
        result.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(result)
    }

    /// Encrypts `plain` and returns every byte TLS has to send, its own
    /// records (handshake, alerts, tickets) in their order with the data.
    pub fn seal(&mut self, plain: &[u8]) -> io::Result<BytesMut> {
        if !plain.is_empty() {
            self.conn.writer().write_all(plain)?;
        }
        // Each record of up to 16 KiB adds at most a few dozen bytes.
        let records = plain.len() / (16 * 1024) + 2;
        let mut raw = BytesMut::with_capacity(plain.len() + records * 64).writer();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut raw)?;
        }
        Ok(raw.into_inner())
    }
}
