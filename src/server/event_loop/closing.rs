//! How an event loop ends its connections: protocol and transport
//! errors, the peer's close, GOAWAY, closing once all is answered, and
//! the close itself.

use super::*;

impl EventLoop {
    pub(super) fn protocol_error(&mut self, slot: usize, e: ProtocolError) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        log::debug!(
            "{}: conn {} ({:?}) protocol error: {e}",
            self.name,
            conn.shared.id,
            conn.shared.peer
        );
        conn.read_open = false;
        self.goaway(slot, Code::INTERNAL, &e.to_string());
        self.start_closing(slot);
    }

    /// The transport failed (a TLS handshake or record error, plaintext on
    /// a TLS-only listener): nothing more is read; what the transport has
    /// left to say (a TLS alert) is written, then the connection closes.
    pub(super) fn transport_failed(&mut self, slot: usize, e: TransportError) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        log::debug!(
            "{}: conn {} ({:?}): {e}",
            self.name,
            conn.shared.id,
            conn.shared.peer
        );
        conn.read_open = false;
        self.start_closing(slot);
    }

    pub(super) fn peer_closed(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.read_open = false;
        if let Err(e) = conn.decoder.finish(&conn.partial, &conn.shared) {
            log::debug!("{}: conn {}: {e}", self.name, conn.shared.id);
            self.goaway(slot, Code::INTERNAL, &e.to_string());
        }
        // Every request read is still answered; then the connection closes.
        self.start_closing(slot);
    }

    pub(super) fn goaway(&mut self, slot: usize, code: Code, message: &str) {
        if let Some(conn) = self.conns.get(slot) {
            let mut st = conn.shared.lock();
            if !st.closed {
                let protocol = st.protocol;
                protocol.write_goaway(&mut st.out, code, message);
            }
        }
    }

    pub(super) fn goaway_draining(&mut self, slot: usize) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        let protocol = {
            let mut st = conn.shared.lock();
            st.draining = true;
            st.protocol
        };
        if protocol.has_goaway() {
            self.goaway(slot, Code::UNAVAILABLE, "server shutting down");
            self.flush(slot);
        } else {
            // No GOAWAY to tell the client: close once nothing is in
            // flight, answering what comes meanwhile "server shutting down".
            self.start_closing(slot);
        }
    }

    pub(super) fn start_closing(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.closing = true;
            conn.closing_since.get_or_insert_with(Instant::now);
            conn.shared.lock().closing = true;
        }
        self.flush(slot);
    }

    /// Closes the connection now: deregisters it, cancels what is in
    /// flight on it and gives back what it held.
    pub(super) fn close(&mut self, slot: usize) {
        let Some(conn) = self.conns.try_remove(slot) else {
            return;
        };
        let fd = conn.shared.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        let cancelled = conn.shared.close();
        if cancelled > 0 {
            log::debug!(
                "{}: conn {} closed with {cancelled} requests in flight",
                self.name,
                conn.shared.id
            );
        }
        self.server
            .buffered
            .fetch_sub(conn.counted, Ordering::Relaxed);
        self.server.connections.fetch_sub(1, Ordering::SeqCst);
        drop(conn);
        // A file descriptor may come free: accepting may work again.
        if self.accept_resume.is_some() {
            self.resume_accepting();
        }
    }
}
