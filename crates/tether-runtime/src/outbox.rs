//! Handing events to the application without ever waiting for it.
//!
//! A driver loop (a session task, the client task) takes an event from its
//! core only when the application's queue has room for it: an event left in
//! the core is not yet delivered, so the core withholds its acknowledgement
//! and, past its receive window, defers further messages (`docs/PROTOCOL.md`
//! §7.8). Meanwhile the loop keeps reading, answering PINGs and writing: a
//! busy application slows delivery but never makes a healthy link look dead.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::mpsc::{OwnedPermit, Sender};

type RoomFuture<T> = Pin<Box<dyn Future<Output = Result<OwnedPermit<T>, SendError<()>>> + Send>>;

/// Room in the application's queue, as far as one driver knows it.
pub(crate) struct Outbox<T> {
    /// The wait for room, armed only while the queue is full (boxed: idle
    /// sessions must not reserve its space).
    room: Option<RoomFuture<T>>,
    /// Room obtained by that wait, kept for the next event.
    permit: Option<OwnedPermit<T>>,
}

/// What [`Outbox::take_room`] found.
pub(crate) enum Room<T> {
    /// Room for one event.
    Ready(OwnedPermit<T>),
    /// None now; [`Outbox::wait`] resolves when there is.
    Full,
    /// Nobody reads events any more: discard them.
    Gone,
}

impl<T: Send + 'static> Outbox<T> {
    pub(crate) fn new() -> Self {
        Outbox { room: None, permit: None }
    }

    /// Room for one event, now or never: when the queue is full, arms the
    /// wait that [`Outbox::wait`] completes.
    pub(crate) fn take_room(&mut self, tx: &Sender<T>) -> Room<T> {
        if let Some(p) = self.permit.take() {
            return Room::Ready(p);
        }
        match tx.clone().try_reserve_owned() {
            Ok(p) => {
                // Room came another way: a wait still queued would take a
                // slot later and keep it.
                self.room = None;
                Room::Ready(p)
            }
            Err(TrySendError::Full(_)) => {
                if self.room.is_none() {
                    self.room = Some(Box::pin(tx.clone().reserve_owned()));
                }
                Room::Full
            }
            Err(TrySendError::Closed(_)) => Room::Gone,
        }
    }

    /// Nothing waits to be handed over: give back any slot held or waited
    /// for, so idle drivers never sit on the shared queue's capacity.
    pub(crate) fn idle(&mut self) {
        self.room = None;
        self.permit = None;
    }

    /// Resolves once the application made room (kept for the next
    /// [`Outbox::take_room`]); never while nothing waits for room. A
    /// `poll_fn`, not an `async fn`: every idle session's task holds this
    /// future, and it must be no bigger than the borrow it needs.
    pub(crate) fn wait(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let Some(f) = &mut self.room else { return Poll::Pending };
            let r = std::task::ready!(f.as_mut().poll(cx));
            self.room = None;
            self.permit = r.ok();
            Poll::Ready(())
        })
    }
}
