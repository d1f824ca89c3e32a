//! [`Ticket`]: the promise that a journal submission becomes durable, usable
//! from async code (a `Future`), a plain thread (blocking) or a poll loop.
//! Backed by a `tokio::sync::oneshot`, which needs no particular runtime, so
//! the journal's writer thread can resolve it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::group::JournalError;

/// The promise that a submission becomes durable: a `Future` (await it
/// from any async runtime), or block on it with [`Ticket::wait_blocking`]
/// from a plain thread, or poll it without waiting with
/// [`Ticket::try_result`].
#[must_use = "a journal write is only durable once its ticket resolves"]
#[derive(Debug)]
pub struct Ticket(TicketState);

#[derive(Debug)]
enum TicketState {
    Ready(Option<Result<(), JournalError>>),
    Pending(oneshot::Receiver<Result<(), JournalError>>),
}

impl Ticket {
    pub(crate) fn ready(result: Result<(), JournalError>) -> Ticket {
        Ticket(TicketState::Ready(Some(result)))
    }

    pub(crate) fn pending(rx: oneshot::Receiver<Result<(), JournalError>>) -> Ticket {
        Ticket(TicketState::Pending(rx))
    }

    /// Resolves once the submission is durable (or failed). Same as
    /// awaiting the ticket itself.
    pub async fn wait(self) -> Result<(), JournalError> {
        self.await
    }

    /// Blocks the calling thread until the submission is durable (or failed).
    ///
    /// # Panics
    /// When called from within an async execution context (tokio forbids
    /// blocking a worker); use [`Ticket::wait`] there.
    pub fn wait_blocking(self) -> Result<(), JournalError> {
        match self.0 {
            TicketState::Ready(result) => result.unwrap_or(Err(JournalError::Closed)),
            TicketState::Pending(rx) => rx.blocking_recv().unwrap_or(Err(JournalError::Closed)),
        }
    }

    /// Non-blocking check: `Some(result)` once resolved (then the ticket is
    /// spent and later calls return `Some(Err(Closed))`), `None` while pending.
    pub fn try_result(&mut self) -> Option<Result<(), JournalError>> {
        match &mut self.0 {
            TicketState::Ready(result) => Some(result.take().unwrap_or(Err(JournalError::Closed))),
            TicketState::Pending(rx) => match rx.try_recv() {
                Ok(result) => {
                    self.0 = TicketState::Ready(None);
                    Some(result)
                }
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(JournalError::Closed)),
            },
        }
    }
}

impl Future for Ticket {
    type Output = Result<(), JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            TicketState::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(JournalError::Closed)))
            }
            TicketState::Pending(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(JournalError::Closed))),
        }
    }
}
