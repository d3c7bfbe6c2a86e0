//! What a machine owes its runtime, shared by [`crate::Client`] and
//! [`crate::ServerSession`]: transmits to carry out in order, and events for
//! the application. Every CLOSE either machine sends is built here.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::CloseCode;
use crate::frame::Frame;
use crate::{Transmit, TransportId};

#[derive(Debug)]
pub(crate) struct Outputs<E> {
    transmits: VecDeque<Transmit>,
    events: VecDeque<E>,
}

impl<E> Default for Outputs<E> {
    fn default() -> Self {
        Outputs { transmits: VecDeque::new(), events: VecDeque::new() }
    }
}

impl<E> Outputs<E> {
    /// Write `frame` on `tid`.
    pub(crate) fn send(&mut self, tid: TransportId, frame: Frame) {
        self.transmits.push_back(Transmit::Send { transport: tid, frame });
    }

    /// Send CLOSE with `code`, flush it, close the transport.
    pub(crate) fn close(&mut self, tid: TransportId, code: CloseCode, retry_after: Duration, reason: &str) {
        self.send(tid, Frame::close(code, retry_after, reason));
        self.finish(tid);
    }

    /// Close after writing what is queued, with no CLOSE of our own (the
    /// peer sent one, or a refusal frame was queued already).
    pub(crate) fn finish(&mut self, tid: TransportId) {
        self.transmits.push_back(Transmit::Close { transport: tid, flush: true });
    }

    /// Drop the transport at once: the peer is presumed dead, or it closed.
    pub(crate) fn abandon(&mut self, tid: TransportId) {
        self.transmits.push_back(Transmit::Close { transport: tid, flush: false });
    }

    /// Ask the runtime to open a transport (client only).
    pub(crate) fn connect(&mut self, tid: TransportId) {
        self.transmits.push_back(Transmit::Connect { transport: tid });
    }

    pub(crate) fn event(&mut self, e: E) {
        self.events.push_back(e);
    }

    pub(crate) fn pop_transmit(&mut self) -> Option<Transmit> {
        crate::pop_release(&mut self.transmits)
    }

    pub(crate) fn pop_event(&mut self) -> Option<E> {
        crate::pop_release(&mut self.events)
    }

    /// True while events wait for the application.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }
}
