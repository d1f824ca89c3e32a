//! The device's I/O loop: the one task that awaits. Each turn takes one
//! event (a message, a journal ticket, a finished call, a delivery report, a
//! timer, a control request), feeds it to the sans-IO
//! [`Machine`](relay_core::machine::Machine), and carries out the effects it
//! returns: journal appends (tickets awaited as events), publishes, PUBACKs
//! and handler starts. Every decision (what to journal when, what waits for
//! durability, what is held or coalesced, when to compact) is the machine's.
//!
//! ```text
//! transport.recv ─> machine.on_message ─┐
//! executor done  ─> machine.on_attempt_done ─┤                ┌─> Append/Rewrite ─> journal ticket
//! ticket resolves ─> machine.on_durable ─────┼─> machine.tick ┼─> Publish ─> publisher
//! publisher acked ─> machine.on_delivered ───┘  (one per turn) ├─> Ack ─> transport
//!                                                              ├─> Start ─> executor
//!                                                              └─> Upcoming ─> ahead
//! ```
//!
//! `Upcoming` announces an `_install` chunk as it is queued: the `ahead`
//! thread receives it and prepares a complete bundle before its turn.
//!
//! A turn takes every event that is ready (up to [`MAX_EVENTS_PER_TURN`])
//! before the machine's `tick`, so whatever piled up shares one append.
//! Under load nothing here awaits an fsync: tickets are queued and awaited
//! as events, so messages keep flowing in while a batch is being synced
//! (pipelining), and the group-commit thread merges whatever piled up
//! meanwhile. Idle, on a thread of its own, the driver commits itself (an
//! `Append` the machine marks `idle`): there is nothing to overlap, and the
//! hand-off would cost more than it saves.
//!
//! A full disk is the machine's business too (`relay_core::machine`'s
//! `space`): the driver reports a commit refused for lack of space
//! (`on_append_failed`), whether the journal writes into its reserve
//! (`on_space`, after every commit), and the journal's answer to a `Probe`.
//! Any other journal failure stops the device (fail-stop, see
//! [`RuntimeError::Journal`]): after a failed fsync the kernel may have
//! dropped the data, and only a replay knows what is on disk.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use relay_core::machine::{Effect, Listed, Machine};
use relay_core::status::Status;
use relay_store::{Journal, JournalError};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::clock::Clock;
use super::executor::{Done, Executor};
use super::handlers::Handlers;
use super::publisher;
use super::shutdown::Link;
use super::timer::Timer;
use super::{RuntimeError, RuntimeState, ShutdownReport, Stats};
use crate::transport::{AckToken, Incoming};

type TicketFuture = Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send>>;

/// What a journal ticket answers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    /// An append, retry or rewrite covering the records up to this count.
    Commit(u64),
    /// A probe of the journal's reserve.
    Probe,
}

/// Most events one turn takes before it commits: bounds the batch (and
/// the latency of its first command) under a flood.
const MAX_EVENTS_PER_TURN: usize = 256;

/// Requests from the [`super::RuntimeHandle`].
#[derive(Debug)]
pub enum Control {
    Shutdown,
    StatusOf(String, oneshot::Sender<Option<Status>>),
    State(oneshot::Sender<RuntimeState>),
}

/// One thing that happened.
enum Event {
    Durable(Pending, Result<(), JournalError>),
    /// The broker acknowledged the final status of this command.
    Delivered(Option<String>),
    Done(Option<Done>),
    Incoming(Option<Incoming>),
    Timer,
    Control(Option<Control>),
    Deadline,
}

/// The driver's state. See the module doc.
pub struct Driver<T: Link> {
    pub(super) transport: Arc<T>,
    pub(super) machine: Machine<AckToken>,
    pub(super) journal: Option<Journal>,
    pub(super) tickets: VecDeque<(Pending, TicketFuture)>,
    pub(super) executor: Option<Executor>,
    /// Receives `_install` chunks ahead of their turn (with an installer).
    pub(super) ahead: Option<super::ahead::Ahead>,
    /// Where updated plugins stand, for `_plugins` (with an installer).
    pub(super) update_states: Option<super::installer::UpdateStates>,
    pub(super) done_rx: UnboundedReceiver<Done>,
    pub(super) publisher: Option<publisher::Front>,
    pub(super) publisher_task: Option<JoinHandle<()>>,
    /// Ids of final statuses the broker acknowledged (from the publisher).
    pub(super) delivered_rx: UnboundedReceiver<String>,
    /// The publisher stopped reporting deliveries.
    pub(super) delivered_closed: bool,
    pub(super) clock: Arc<dyn Clock>,
    /// How long a shutdown waits for the running handler.
    pub(super) shutdown_deadline: Duration,
    pub(super) handlers: Handlers,
    pub(super) control: UnboundedReceiver<Control>,
    pub(super) stats: Arc<Stats>,
    /// Set once a shutdown began: when the running handler must be done.
    pub(super) stopping: Option<Instant>,
    /// The transport's receive side ended.
    pub(super) link_closed: bool,
    /// Every [`super::RuntimeHandle`] was dropped.
    pub(super) control_closed: bool,
    /// The driver has a thread of its own and may block it on a commit.
    pub(super) commit_inline: bool,
    /// The machine's wake-ups (retries, expiries, linger, held statuses).
    pub(super) timer: Timer,
    /// Reused buffer for the machine's effects.
    pub(super) effects: Vec<Effect<AckToken>>,
    /// The machine's coalesced count already added to the shared stats.
    pub(super) coalesced_reported: u64,
}

impl<T: Link> Driver<T> {
    /// Runs until a shutdown completes (or the journal fails).
    pub async fn run(mut self) -> Result<ShutdownReport, RuntimeError> {
        self.end_turn();
        loop {
            if let Some(deadline) = self.stopping {
                let idle = self.machine.running().is_none();
                if idle || Instant::now() >= deadline {
                    break;
                }
            }
            let event = self.next_event().await;
            self.on_event(event)?;
            // Everything else that is ready now joins this turn, so that
            // it shares one journal commit (group commit by batching).
            for _ in 0..MAX_EVENTS_PER_TURN {
                match ready_now(self.next_event()).await {
                    Some(Event::Timer | Event::Deadline) | None => break,
                    Some(event) => self.on_event(event)?,
                }
            }
            self.end_turn();
        }
        self.finish().await
    }

    fn on_event(&mut self, event: Event) -> Result<(), RuntimeError> {
        let now = self.now();
        match event {
            Event::Durable(pending, result) => {
                self.tickets.pop_front();
                self.on_ticket(pending, result, now)?;
            }
            Event::Done(Some(done)) => {
                let Done {
                    invocation,
                    result,
                    events,
                    ran_by,
                    elapsed,
                } = done;
                tracing::debug!(id = %invocation.id, attempt = invocation.attempt, ?elapsed, ?result, "attempt ended");
                self.stats.finished.fetch_add(1, Ordering::Relaxed);
                self.machine
                    .on_attempt_done_by(&invocation.id, result, events, ran_by, now);
            }
            Event::Done(None) => return Err(RuntimeError::HandlerThread),
            Event::Incoming(Some(msg)) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                let Incoming {
                    role,
                    payload,
                    token,
                    ..
                } = msg;
                let handlers = &self.handlers;
                let states = &self.update_states;
                self.machine.on_message(
                    role.as_ref().copied().map_err(String::as_str),
                    &payload,
                    token,
                    now,
                    || match states {
                        Some(states) => states.list(handlers.plugins()),
                        None => handlers.plugins().into_iter().map(Listed::from).collect(),
                    },
                );
            }
            Event::Incoming(None) => {
                tracing::info!("the link closed: shutting down");
                self.link_closed = true;
                self.begin_stop();
            }
            Event::Delivered(Some(id)) => self.on_delivered(id),
            Event::Delivered(None) => self.delivered_closed = true,
            Event::Timer | Event::Deadline => {}
            Event::Control(Some(Control::Shutdown)) => self.begin_stop(),
            Event::Control(None) => {
                // Every handle is gone: nobody can stop us later, so stop now.
                self.control_closed = true;
                self.begin_stop();
            }
            Event::Control(Some(Control::StatusOf(id, reply))) => {
                let _ = reply.send(self.machine.status_of(&id));
            }
            Event::Control(Some(Control::State(reply))) => {
                let _ = reply.send(self.machine.state());
            }
        }
        self.carry_out();
        Ok(())
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    async fn next_event(&mut self) -> Event {
        let accepting = !self.link_closed && self.machine.accepting();
        self.arm_timer();
        let deadline = self.stopping;
        let transport = &self.transport;
        let ticket = self.tickets.front_mut();
        let timer = &mut self.timer;
        tokio::select! {
            biased;
            control = self.control.recv(), if !self.control_closed => Event::Control(control),
            // A finished call before the commit that gates its status: the
            // status is then released by that commit together with the
            // command's `accepted`, which it supersedes (one publish).
            done = self.done_rx.recv() => Event::Done(done),
            (pending, result) = async move {
                match ticket {
                    Some((pending, fut)) => (*pending, fut.as_mut().await),
                    None => std::future::pending().await,
                }
            } => Event::Durable(pending, result),
            id = self.delivered_rx.recv(), if !self.delivered_closed => Event::Delivered(id),
            msg = transport.recv(), if accepting => Event::Incoming(msg),
            () = timer.wait(), if timer.at.is_some() => {
                timer.at = None;
                Event::Timer
            }
            _ = sleep_until_opt(deadline) => Event::Deadline,
        }
    }

    /// Points the one timer at the machine's next wake-up. The timer is
    /// re-armed only when that moment moves: a timer registration per poll
    /// would cost every turn (several per command) a lock on tokio's timer
    /// wheel.
    fn arm_timer(&mut self) {
        let now = self.now();
        let at = self
            .machine
            .next_wakeup(now)
            .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now)));
        self.timer.point_at(at);
    }

    /// The turn's events are in: the machine starts what can start and
    /// submits the turn's records; carry that out.
    fn end_turn(&mut self) {
        let now = self.now();
        self.machine.tick(now);
        self.carry_out();
    }

    /// Carries out the machine's effects, in order.
    fn carry_out(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        self.machine.take_effects(&mut effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Append {
                    records,
                    covered,
                    idle,
                } => {
                    let Some(journal) = &self.journal else {
                        continue;
                    };
                    // Idle: nothing can happen until this commit is done, so
                    // do it here and skip the journal thread's two wake-ups.
                    // Busy: hand it to the journal thread and keep going, so
                    // the next handler call and the next messages never wait
                    // for the disk and the writer batches what piles up.
                    let ticket = if self.commit_inline && idle {
                        journal.append_now(records)
                    } else {
                        journal.append(records)
                    };
                    self.tickets
                        .push_back((Pending::Commit(covered), Box::pin(ticket.wait())));
                }
                Effect::Retry { records, covered } => {
                    let Some(journal) = &self.journal else {
                        continue;
                    };
                    let ticket = journal.retry(records).wait();
                    self.tickets
                        .push_back((Pending::Commit(covered), Box::pin(ticket)));
                }
                Effect::Probe => {
                    let Some(journal) = &self.journal else {
                        continue;
                    };
                    let ticket = journal.probe().wait();
                    self.tickets.push_back((Pending::Probe, Box::pin(ticket)));
                }
                Effect::Rewrite { records, covered } => {
                    let Some(journal) = &self.journal else {
                        continue;
                    };
                    self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                    let ticket = journal.rewrite(records).wait();
                    self.tickets
                        .push_back((Pending::Commit(covered), Box::pin(ticket)));
                }
                Effect::Publish(message) => {
                    if let Some(front) = &self.publisher {
                        front.publish(&*self.transport, message);
                    }
                }
                Effect::Ack(token) => match self.transport.ack(token) {
                    Ok(()) => {
                        self.stats.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(refused) => {
                        tracing::debug!(%refused, "ack refused; the broker redelivers")
                    }
                },
                Effect::Upcoming(invocation) => {
                    if let Some(ahead) = &self.ahead {
                        ahead.submit(invocation);
                    }
                }
                Effect::Start(invocation) => {
                    tracing::debug!(id = %invocation.id, name = %invocation.name, attempt = invocation.attempt, "starting");
                    self.stats.started.fetch_add(1, Ordering::Relaxed);
                    let submitted = self.executor.as_ref().is_some_and(|e| e.submit(invocation));
                    if !submitted {
                        tracing::error!("the handler thread is gone");
                    }
                }
            }
        }
        self.effects = effects;
        let counters = self.machine.counters();
        self.stats
            .rejected
            .store(counters.rejected, Ordering::Relaxed);
        let coalesced = counters.coalesced - self.coalesced_reported;
        if coalesced > 0 {
            self.coalesced_reported = counters.coalesced;
            self.stats
                .publish
                .coalesced
                .fetch_add(coalesced, Ordering::Relaxed);
        }
    }

    /// A journal ticket resolved: tell the machine, or stop on a failure
    /// that is not a full disk.
    fn on_ticket(
        &mut self,
        pending: Pending,
        result: Result<(), JournalError>,
        now: u64,
    ) -> Result<(), RuntimeError> {
        let in_reserve = self.journal.as_ref().is_some_and(Journal::reserve_in_use);
        match (pending, result) {
            (Pending::Commit(covered), Ok(())) => {
                self.copy_journal_stats();
                self.machine.on_durable(covered, now);
                self.machine.on_space(in_reserve, now);
            }
            (Pending::Probe, Ok(())) => self.machine.on_probed(in_reserve, now),
            (Pending::Commit(_), Err(error)) if error.is_no_space() => {
                self.machine.on_append_failed(now);
            }
            (Pending::Probe, Err(error)) if error.is_no_space() => {
                self.machine.on_probed(true, now);
            }
            (_, Err(error)) => {
                tracing::error!(%error, "journal failed: no more acks; stopping (fail-stop: check the disk, then restart, which replays the journal)");
                return Err(RuntimeError::Journal(error));
            }
        }
        Ok(())
    }

    fn copy_journal_stats(&self) {
        if let Some(journal) = &self.journal {
            let j = journal.stats();
            self.stats
                .journal_records
                .store(j.records, Ordering::Relaxed);
            self.stats.journal_syncs.store(j.syncs, Ordering::Relaxed);
        }
    }

    /// Reports this and every other acknowledged final status waiting in
    /// the channel (their records ride the turn's append).
    fn on_delivered(&mut self, first: String) {
        let now = self.now();
        self.machine.on_delivered(&first, now);
        while let Ok(id) = self.delivered_rx.try_recv() {
            self.machine.on_delivered(&id, now);
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_none() {
            let deadline = Instant::now() + self.shutdown_deadline;
            if let Some((id, attempt)) = self.machine.running() {
                tracing::info!(%id, attempt, deadline = ?self.shutdown_deadline, "waiting for the running handler");
            }
            self.machine.stop();
            self.stopping = Some(deadline);
        }
    }

    /// Makes everything durable, releases what it gates, closes the journal,
    /// the publisher and the link.
    async fn finish(mut self) -> Result<ShutdownReport, RuntimeError> {
        let abandoned = self
            .machine
            .running()
            .map(|(id, attempt)| (id.to_string(), attempt));
        if let Some((id, attempt)) = &abandoned {
            tracing::warn!(%id, attempt, "handler still running at the shutdown deadline; it re-runs after restart");
        }
        self.machine.close(self.now());
        self.commit_all().await?;
        // The publisher sends what it still has, then waits (briefly) for
        // the broker to acknowledge final statuses; journal those as
        // delivered, so a restart does not publish them again.
        drop(self.publisher.take());
        let until = Instant::now() + self.shutdown_deadline;
        while !self.delivered_closed {
            match tokio::time::timeout_at(until, self.delivered_rx.recv()).await {
                Ok(Some(id)) => self.on_delivered(id),
                Ok(None) => self.delivered_closed = true,
                Err(_) => break,
            }
        }
        self.machine.tick(self.now());
        self.commit_all().await?;
        let pending = self.machine.pending_len();
        if let Some(journal) = self.journal.take() {
            match tokio::task::spawn_blocking(move || journal.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(RuntimeError::Journal(error)),
                Err(_) => return Err(RuntimeError::Journal(JournalError::Closed)),
            }
        }
        match self.executor.take() {
            Some(executor) if abandoned.is_some() => executor.detach(),
            other => drop(other),
        }
        let deadline = self.shutdown_deadline;
        if let Some(task) = self.publisher_task.take() {
            if tokio::time::timeout(deadline, task).await.is_err() {
                tracing::warn!("statuses still queued at the shutdown deadline were dropped");
            }
        }
        self.transport.close(deadline).await;
        tracing::info!(pending, "stopped");
        Ok(ShutdownReport { pending, abandoned })
    }

    /// Shutdown: carries out what the machine submitted and awaits every
    /// ticket, carrying out what each one releases.
    async fn commit_all(&mut self) -> Result<(), RuntimeError> {
        self.carry_out();
        while let Some((pending, ticket)) = self.tickets.pop_front() {
            let result = ticket.await;
            // A full disk at shutdown: what is not durable gates nothing
            // acknowledged or announced, and is retried after the restart.
            self.on_ticket(pending, result, self.now())?;
            self.carry_out();
        }
        Ok(())
    }
}

/// Polls `future` once: its output if it is ready now.
async fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
