//! The main loop: the one task that owns the sans-IO core (scheduler) and
//! the only place that awaits. Each turn takes one event (a message, a
//! journal ticket, a finished call, a timer, a control request), feeds it to
//! the core, carries out the resulting actions, then submits the records the
//! turn produced as one group-commit append.
//!
//! ```text
//! transport.recv ─> envelope::decode ─> scheduler.accept ─> Journal(Accepted) ─┐
//!                                        scheduler.poll ─> Journal(Started) ──┤ one append
//!                                                           Start ─> executor  │ per turn
//! ticket resolves ─> pipeline.release ─> PUBACK, statuses, careful starts <────┘
//! executor done ─> scheduler.finish ─> Journal(Finished) + final status
//! ```
//!
//! A turn takes every event that is ready (up to [`MAX_EVENTS_PER_TURN`])
//! before it commits, so whatever piled up shares one append. Under load
//! nothing here awaits an fsync: tickets are queued and awaited as events,
//! so messages keep flowing in while a batch is being synced (pipelining),
//! and the group-commit thread merges whatever piled up meanwhile. Idle, on
//! a thread of its own, the driver commits itself (see `submit`): there is
//! nothing to overlap, and the hand-off would cost more than it saves.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use relay_core::envelope::{self, Envelope};
use relay_core::journal::record::Record;
use relay_core::registry::is_reserved;
use relay_core::scheduler::{Action, Scheduler, Start};
use relay_core::status::{Code, State, Status};
use relay_store::{Journal, JournalError};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::builtins::{self, BuiltinAccess, BuiltinAnswer};
use super::clock::Clock;
use super::executor::{Done, Executor};
use super::handlers::Handlers;
use super::held::Held;
use super::pipeline::{Gated, Pipeline};
use super::publisher::{self, Outgoing};
use super::shutdown::Link;
use super::{RuntimeError, RuntimeOptions, RuntimeState, ShutdownReport, Stats};
use crate::transport::{AckToken, Incoming};

type TicketFuture = Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send>>;

/// How long lazy records (outcomes, see `pipeline`) may wait for an eager
/// record to share its fsync before they are submitted alone. A crash in
/// this window re-runs the command that just finished (as a crash during
/// its fsync would); under traffic the next command comes much sooner.
const LAZY_LINGER: Duration = Duration::from_millis(5);

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
    Durable(u64, Result<(), JournalError>),
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
    pub(super) scheduler: Scheduler,
    pub(super) journal: Option<Journal>,
    pub(super) tickets: VecDeque<(u64, TicketFuture)>,
    pub(super) pipeline: Pipeline,
    pub(super) executor: Option<Executor>,
    pub(super) done_rx: UnboundedReceiver<Done>,
    pub(super) publisher: Option<publisher::Front>,
    pub(super) publisher_task: Option<JoinHandle<()>>,
    /// Ids of final statuses the broker acknowledged (from the publisher).
    pub(super) delivered_rx: UnboundedReceiver<String>,
    /// The publisher stopped reporting deliveries.
    pub(super) delivered_closed: bool,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) options: RuntimeOptions,
    pub(super) access: BuiltinAccess,
    pub(super) handlers: Handlers,
    pub(super) control: UnboundedReceiver<Control>,
    pub(super) stats: Arc<Stats>,
    /// Records appended since the last compaction.
    pub(super) since_compaction: u64,
    /// Since when lazy records wait in the outbox.
    pub(super) lazy_since: Option<Instant>,
    /// Set once a shutdown began: when the running handler must be done.
    pub(super) stopping: Option<Instant>,
    /// The transport's receive side ended.
    pub(super) link_closed: bool,
    /// Every [`super::RuntimeHandle`] was dropped.
    pub(super) control_closed: bool,
    /// The driver has a thread of its own and may block it on a commit.
    pub(super) commit_inline: bool,
    /// `accepted` statuses of queued commands, held back under load.
    pub(super) held: Held,
    /// Retries, expiries, the lazy linger and held statuses share it.
    pub(super) timer: Timer,
}

impl<T: Link> Driver<T> {
    /// Runs until a shutdown completes (or the journal fails).
    pub async fn run(mut self, startup: Vec<Action>) -> Result<ShutdownReport, RuntimeError> {
        self.apply(startup);
        self.after_event()?;
        loop {
            if let Some(deadline) = self.stopping {
                let idle = self.scheduler.running().is_none();
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
            self.after_event()?;
        }
        self.finish().await
    }

    fn on_event(&mut self, event: Event) -> Result<(), RuntimeError> {
        match event {
            Event::Durable(covered, result) => self.on_durable(covered, result)?,
            Event::Done(Some(done)) => self.on_done(done),
            Event::Done(None) => return Err(RuntimeError::HandlerThread),
            Event::Incoming(Some(msg)) => self.on_incoming(msg),
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
                let _ = reply.send(self.scheduler.status_of(&id));
            }
            Event::Control(Some(Control::State(reply))) => {
                let _ = reply.send(self.state());
            }
        }
        Ok(())
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn accepting(&self) -> bool {
        self.stopping.is_none()
            && !self.link_closed
            && self.scheduler.pending_len() < self.options.max_pending
    }

    async fn next_event(&mut self) -> Event {
        let accepting = self.accepting();
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
            (covered, result) = async move {
                match ticket {
                    Some((covered, fut)) => (*covered, fut.as_mut().await),
                    None => std::future::pending().await,
                }
            } => Event::Durable(covered, result),
            id = self.delivered_rx.recv(), if !self.delivered_closed => Event::Delivered(id),
            msg = transport.recv(), if accepting => Event::Incoming(msg),
            () = timer.wait(), if timer.at.is_some() => {
                timer.at = None;
                Event::Timer
            }
            _ = sleep_until_opt(deadline) => Event::Deadline,
        }
    }

    /// Points the one timer at the earliest of: the scheduler's next
    /// wake-up (retry, expiry), the end of the lazy records' linger, and
    /// the next held `accepted`. The timer is re-armed only when that
    /// moment moves: a timer registration per poll would cost every turn
    /// (several per command) a lock on tokio's timer wheel.
    fn arm_timer(&mut self) {
        let scheduler = match (self.stopping, self.scheduler.next_wakeup()) {
            (None, Some(at)) => {
                Some(Instant::now() + Duration::from_millis(at.saturating_sub(self.now())))
            }
            _ => None,
        };
        let linger = self.lazy_since.map(|since| since + LAZY_LINGER);
        let held = self.held.next_due();
        let at = [scheduler, linger, held].into_iter().flatten().min();
        self.timer.point_at(at);
    }

    /// Work that follows any event: start what can start, then submit the
    /// turn's records as one append (or a compaction).
    fn after_event(&mut self) -> Result<(), RuntimeError> {
        if self.stopping.is_none() {
            let now = self.now();
            let actions = self.scheduler.poll(now);
            self.apply(actions);
        }
        for status in self.held.due(Instant::now()) {
            self.publish(Outgoing::Status(status));
        }
        self.submit();
        Ok(())
    }

    fn submit(&mut self) {
        let Some(journal) = &self.journal else { return };
        if self.since_compaction >= self.options.compact_after_records
            && self.options.compact_after_records > 0
        {
            let covered = self.pipeline.supersede_outbox();
            let records: Vec<Vec<u8>> = self
                .scheduler
                .retained_records()
                .iter()
                .map(Record::encode)
                .collect();
            tracing::debug!(records = records.len(), "compacting the journal");
            self.stats.compactions.fetch_add(1, Ordering::Relaxed);
            self.since_compaction = 0;
            self.tickets
                .push_back((covered, Box::pin(journal.rewrite(records).wait())));
            return;
        }
        if self.stopping.is_none() && self.pipeline.has_outbox() && !self.pipeline.must_submit() {
            let since = *self.lazy_since.get_or_insert_with(Instant::now);
            if since.elapsed() < LAZY_LINGER {
                return;
            }
        }
        self.lazy_since = None;
        if let Some((batch, covered)) = self.pipeline.take_batch() {
            // Idle (no earlier commit in flight, nothing queued behind the
            // command at hand): nothing can happen until this commit is
            // done, so do it here and skip the journal thread's two wake-ups.
            // Busy: hand it to the journal thread and keep going, so the
            // next handler call and the next messages never wait for the
            // disk and the writer batches what piles up meanwhile.
            let idle = self.tickets.is_empty() && self.scheduler.pending_len() <= 1;
            let ticket = if self.commit_inline && idle {
                journal.append_now(batch)
            } else {
                journal.append(batch)
            };
            self.tickets.push_back((covered, Box::pin(ticket.wait())));
        }
    }

    fn on_durable(
        &mut self,
        covered: u64,
        result: Result<(), JournalError>,
    ) -> Result<(), RuntimeError> {
        self.tickets.pop_front();
        if let Err(error) = result {
            tracing::error!(%error, "journal failed: no more acks; stopping (restart to recover from the journal)");
            return Err(RuntimeError::Journal(error));
        }
        self.pipeline.durable_up_to(covered);
        if let Some(journal) = &self.journal {
            let j = journal.stats();
            self.stats
                .journal_records
                .store(j.records, Ordering::Relaxed);
            self.stats.journal_syncs.store(j.syncs, Ordering::Relaxed);
        }
        self.release();
        Ok(())
    }

    /// Journals `Delivered` for this and every other acknowledged final
    /// status waiting in the channel (they ride the turn's append; nothing
    /// waits for them to be durable).
    fn on_delivered(&mut self, first: String) {
        let mut actions: Vec<Action> = self.scheduler.delivered(&first).into_iter().collect();
        while let Ok(id) = self.delivered_rx.try_recv() {
            actions.extend(self.scheduler.delivered(&id));
        }
        self.apply(actions);
    }

    /// Carries out the scheduler's actions in order (see the pipeline doc
    /// for what waits for durability).
    fn apply(&mut self, actions: Vec<Action>) {
        let mut finished_id: Option<String> = None;
        for action in actions {
            match action {
                Action::Journal(record) => {
                    finished_id = match &record {
                        Record::Finished(s) => Some(s.id.clone()),
                        _ => None,
                    };
                    match &record {
                        Record::Finished(_) | Record::Delivered { .. } => {
                            self.pipeline.record_lazy(record.encode())
                        }
                        _ => self.pipeline.record(record.encode()),
                    }
                    self.since_compaction += 1;
                }
                Action::Publish(status) => {
                    let mut after = self.pipeline.emitted();
                    // A final status waits for the records before its own
                    // `Finished`, not for it: a crash before it is durable
                    // re-runs the command, which was in flight (docs/architecture.md).
                    if status.is_final() && finished_id.as_deref() == Some(status.id.as_str()) {
                        after -= 1;
                    }
                    self.pipeline.gate(after, Gated::Publish(status));
                    finished_id = None;
                }
                Action::Start(start) => {
                    finished_id = None;
                    if start.persist_first {
                        self.pipeline
                            .gate(self.pipeline.emitted(), Gated::Start(start));
                    } else {
                        self.start(start);
                    }
                }
            }
        }
        self.release();
    }

    /// Carries out what became durable. Messages released together are
    /// coalesced here, before they reach the publisher: a fast handler's
    /// final status is released by the same fsync as its `accepted`, which
    /// it supersedes (the publisher could otherwise wake for the first one
    /// alone and send both).
    fn release(&mut self) {
        let mut messages = Vec::new();
        let mut acks = Vec::new();
        for gated in self.pipeline.release() {
            match gated {
                Gated::Ack(token) => acks.push(token),
                Gated::Publish(status) => messages.push(Outgoing::Status(status)),
                Gated::Event { name, payload } => messages.push(Outgoing::Event { name, payload }),
                Gated::Start(start) => self.start(start),
            }
        }
        let mut dropped = publisher::coalesce(&mut messages);
        for message in messages {
            if let Outgoing::Status(status) = &message {
                if status.status == State::Accepted && self.queued_behind(&status.id) {
                    if let Outgoing::Status(status) = message {
                        self.held.hold(status, Instant::now());
                    }
                    continue;
                }
                if self.held.supersede(&status.id) {
                    dropped += 1;
                }
            }
            self.publish(message);
        }
        self.stats
            .publish
            .coalesced
            .fetch_add(dropped as u64, Ordering::Relaxed);
        // PUBACKs after the statuses: the app waits for a status, the
        // broker for nothing in particular (acks keep their own order).
        for token in acks {
            self.ack(token);
        }
    }

    fn ack(&self, token: AckToken) {
        match self.transport.ack(token) {
            Ok(()) => {
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(refused) => tracing::debug!(%refused, "ack refused; the broker redelivers"),
        }
    }

    /// Command `id` waits behind another one (see `held`).
    fn queued_behind(&self, id: &str) -> bool {
        self.scheduler.pending_len() > 1
            && self.scheduler.running().is_none_or(|(cmd, _)| cmd.id != id)
    }

    fn publish(&self, message: Outgoing) {
        if let Some(front) = &self.publisher {
            front.publish(&*self.transport, message);
        }
    }

    fn start(&mut self, start: Start) {
        let Start { invocation, .. } = start;
        tracing::debug!(id = %invocation.id, name = %invocation.name, attempt = invocation.attempt, "starting");
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let submitted = self.executor.as_ref().is_some_and(|e| e.submit(invocation));
        if !submitted {
            tracing::error!("the handler thread is gone");
        }
    }

    fn on_done(&mut self, done: Done) {
        let Done {
            invocation,
            result,
            events,
            elapsed,
        } = done;
        tracing::debug!(id = %invocation.id, attempt = invocation.attempt, ?elapsed, ?result, "attempt ended");
        self.stats.finished.fetch_add(1, Ordering::Relaxed);
        // Events leave with the call's final status: after the records
        // before its `Finished`.
        let after = self.pipeline.emitted();
        for event in events {
            self.pipeline.gate(
                after,
                Gated::Event {
                    name: event.name,
                    payload: event.payload,
                },
            );
        }
        let now = self.now();
        match self.scheduler.finish(&invocation.id, result, now) {
            Ok(actions) => self.apply(actions),
            Err(error) => tracing::error!(%error, "scheduler refused an attempt result"),
        }
    }

    fn on_incoming(&mut self, msg: Incoming) {
        let now = self.now();
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let Incoming {
            role,
            payload,
            token,
            redelivered,
            ..
        } = msg;
        let decoded = envelope::decode(&payload, &self.options.envelope_limits);
        let actions = match (role, decoded) {
            (Err(level), decoded) => {
                let (id, name) = match decoded {
                    Ok(env) => (Some(env.id), Some(env.name)),
                    Err(rejection) => (rejection.id, rejection.name),
                };
                let message =
                    format!("topic level {level:?} is not a role (admin, primary, secondary)");
                self.reject(id, name, Code::NotPermitted, message, now)
            }
            (Ok(_), Err(rejection)) => {
                tracing::warn!(%rejection, "invalid command envelope");
                let (message, code) = (rejection.error.to_string(), rejection.code());
                self.reject(rejection.id, rejection.name, code, message, now)
            }
            (Ok(role), Ok(env)) if is_reserved(&env.name) => {
                let handlers = &self.handlers;
                match builtins::answer(
                    &env,
                    role,
                    &self.access,
                    &self.scheduler,
                    || handlers.plugins(),
                    now,
                ) {
                    BuiltinAnswer::Publish(status) => vec![Action::Publish(status)],
                    BuiltinAnswer::Reject { code, message } => {
                        self.reject(Some(env.id), Some(env.name), code, message, now)
                    }
                }
            }
            (Ok(role), Ok(env)) => {
                tracing::debug!(id = %env.id, name = %env.name, %role, redelivered, "command received");
                self.scheduler.accept(env, role, now)
            }
        };
        self.apply(actions);
        // The PUBACK waits for every record this message produced (its
        // `Accepted`, or its rejection's `Finished`).
        self.pipeline
            .gate(self.pipeline.emitted(), Gated::Ack(token));
        self.release();
    }

    /// A `rejected` status: journaled and deduped when the id is known,
    /// published as is (empty id) otherwise.
    fn reject(
        &mut self,
        id: Option<String>,
        name: Option<String>,
        code: Code,
        message: String,
        now: u64,
    ) -> Vec<Action> {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        let name = name.unwrap_or_default();
        match id {
            Some(id) => self
                .scheduler
                .reject(&Envelope::new(id, name, 0), code, message, now),
            None => vec![Action::Publish(
                Status::new("", name, State::Rejected, 0, now).with_code(code, message),
            )],
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_none() {
            let deadline = Instant::now() + self.options.shutdown_deadline;
            if let Some((cmd, attempt)) = self.scheduler.running() {
                tracing::info!(id = %cmd.id, attempt, deadline = ?self.options.shutdown_deadline, "waiting for the running handler");
            }
            self.stopping = Some(deadline);
        }
    }

    /// Makes everything durable, releases what it gates, closes the journal,
    /// the publisher and the link.
    async fn finish(mut self) -> Result<ShutdownReport, RuntimeError> {
        let abandoned = self
            .scheduler
            .running()
            .map(|(cmd, attempt)| (cmd.id.clone(), attempt));
        if let Some((id, attempt)) = &abandoned {
            tracing::warn!(%id, attempt, "handler still running at the shutdown deadline; it re-runs after restart");
        }
        // Held `accepted` statuses are still true (the commands are
        // journaled); they go before anything this shutdown releases.
        for status in self.held.drain() {
            self.publish(Outgoing::Status(status));
        }
        self.commit_all().await?;
        // The publisher sends what it still has, then waits (briefly) for
        // the broker to acknowledge final statuses; journal those as
        // delivered, so a restart does not publish them again.
        drop(self.publisher.take());
        let until = Instant::now() + self.options.shutdown_deadline;
        while !self.delivered_closed {
            match tokio::time::timeout_at(until, self.delivered_rx.recv()).await {
                Ok(Some(id)) => self.on_delivered(id),
                Ok(None) => self.delivered_closed = true,
                Err(_) => break,
            }
        }
        self.commit_all().await?;
        let pending = self.scheduler.pending_len();
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
        let deadline = self.options.shutdown_deadline;
        if let Some(task) = self.publisher_task.take() {
            if tokio::time::timeout(deadline, task).await.is_err() {
                tracing::warn!("statuses still queued at the shutdown deadline were dropped");
            }
        }
        self.transport.close(deadline).await;
        tracing::info!(pending, "stopped");
        Ok(ShutdownReport { pending, abandoned })
    }

    /// Shutdown: submits what is left and awaits every ticket, releasing
    /// what each one gates (starts are dropped: we are stopping; publishes
    /// are dropped once the publisher is closed).
    async fn commit_all(&mut self) -> Result<(), RuntimeError> {
        self.submit();
        while let Some((covered, ticket)) = self.tickets.pop_front() {
            if let Err(error) = ticket.await {
                tracing::error!(%error, "journal failed during shutdown");
                return Err(RuntimeError::Journal(error));
            }
            self.pipeline.durable_up_to(covered);
            for gated in self.pipeline.release() {
                match gated {
                    Gated::Ack(token) => self.ack(token),
                    Gated::Publish(status) => self.publish(Outgoing::Status(status)),
                    Gated::Event { name, payload } => {
                        self.publish(Outgoing::Event { name, payload })
                    }
                    Gated::Start(_) => {}
                }
            }
        }
        Ok(())
    }

    fn state(&self) -> RuntimeState {
        RuntimeState {
            pending: self.scheduler.pending_len(),
            remembered: self.scheduler.remembered_len(),
            running: self.scheduler.running().map(|(c, a)| (c.id.clone(), a)),
            records_emitted: self.pipeline.emitted(),
            records_durable: self.pipeline.durable(),
            next_wakeup: self.scheduler.next_wakeup(),
        }
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

/// The driver's one timer (see `Driver::arm_timer`). Its `Sleep` is made on
/// first use, so it belongs to the runtime the driver runs on (a `Sleep`
/// binds to the runtime current where it is created, and the driver is
/// built on the caller's).
#[derive(Default)]
pub(super) struct Timer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Where it points; `None`: disarmed.
    at: Option<Instant>,
}

impl Timer {
    /// Scheduler wake-ups come in whole milliseconds from a wall clock, so
    /// the same one maps to a slightly different `Instant` on every turn. A
    /// timer already armed up to this much *earlier* is kept: at worst it
    /// fires a little early, the turn finds nothing due and re-arms it.
    const SLACK: Duration = Duration::from_millis(1);

    fn point_at(&mut self, at: Option<Instant>) {
        match (self.at, at) {
            (_, None) => self.at = None,
            (Some(armed), Some(at)) if armed <= at && at - armed < Self::SLACK => {}
            (_, Some(at)) => {
                match &mut self.sleep {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                self.at = Some(at);
            }
        }
    }

    /// Until the moment it points to (forever if it was never armed).
    async fn wait(&mut self) {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one timer is re-armed only when its moment moves: later by less
    /// than the slack keeps it (it fires a little early, which is harmless),
    /// earlier or much later re-arms it, `None` disarms it.
    #[tokio::test(start_paused = true)]
    async fn the_timer_is_rearmed_only_when_its_moment_moves() {
        let base = Instant::now();
        let ms = Duration::from_millis;
        let mut timer = Timer::default();
        assert_eq!(timer.at, None);
        timer.point_at(Some(base + ms(10)));
        assert_eq!(timer.at, Some(base + ms(10)));
        timer.point_at(Some(base + ms(10) + Duration::from_micros(600)));
        assert_eq!(timer.at, Some(base + ms(10)), "within the slack: kept");
        timer.point_at(Some(base + ms(5)));
        assert_eq!(timer.at, Some(base + ms(5)), "earlier: re-armed");
        timer.point_at(Some(base + ms(7)));
        assert_eq!(
            timer.at,
            Some(base + ms(7)),
            "later beyond the slack: re-armed"
        );
        timer.point_at(None);
        assert_eq!(timer.at, None);

        // It fires at the moment it points to.
        timer.point_at(Some(base + ms(20)));
        timer.wait().await;
        assert_eq!(Instant::now(), base + ms(20));
    }
}
