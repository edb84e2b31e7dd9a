//! The client's handshake, run on the blocking socket before the
//! connection's IO thread starts.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::session::Session;

/// Runs the handshake of `conn` over `stream` within `timeout`, and says
/// clearly when the server does not speak TLS at all.
pub(crate) fn run(
    stream: &TcpStream,
    conn: rustls::ClientConnection,
    timeout: Duration,
) -> io::Result<Session> {
    let deadline = Instant::now() + timeout;
    let mut conn = conn;
    let mut io = Recording {
        stream,
        first: None,
        deadline,
    };
    let result = (|| {
        while conn.is_handshaking() {
            conn.complete_io(&mut io)?;
        }
        // The last flight (the client's Finished) goes out now.
        while conn.wants_write() {
            conn.write_tls(&mut io)?;
        }
        Ok::<(), io::Error>(())
    })();
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    match result {
        Ok(()) => Ok(Session::new(conn)),
        Err(e) => Err(explain(e, io.first)),
    }
}

/// A handshake error, named after what went wrong.
fn explain(e: io::Error, first: Option<u8>) -> io::Error {
    // Every TLS record starts with a content type from 20 to 23.
    let not_tls = first.is_some_and(|b| !(0x14..=0x17).contains(&b));
    let message = if not_tls {
        format!(
            "TLS handshake failed: the server answered in plaintext (first byte {:#04x}): \
             the client is set for TLS but the server's listener is not",
            first.unwrap_or(0)
        )
    } else if first.is_none() && e.kind() == io::ErrorKind::UnexpectedEof {
        "TLS handshake failed: the server closed the connection without a word \
         (not a TLS server, or it refused the connection)"
            .to_owned()
    } else if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        "TLS handshake timed out: the server did not answer the ClientHello \
         (is it a TLS server?)"
            .to_owned()
    } else {
        format!("TLS handshake failed: {e}")
    };
    io::Error::new(e.kind(), message)
}

/// The socket, with the connect deadline on every call and the first byte
/// the server sent noted.
struct Recording<'a> {
    stream: &'a TcpStream,
    first: Option<u8>,
    deadline: Instant,
}

impl Recording<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl Read for Recording<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let n = (&*self.stream).read(buf)?;
        if n > 0 && self.first.is_none() {
            self.first = Some(buf[0]);
        }
        Ok(n)
    }
}

impl Write for Recording<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        (&*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
