//! Step 5 seen from the runtime: one dedicated thread that runs handler
//! calls, so a plugin (wasm, possibly seconds of CPU) or a blocking native
//! handler never stalls the async driver, which keeps reading, journaling
//! and acking while a call runs.
//!
//! One thread, one call at a time: the scheduler starts at most one attempt
//! (strict FIFO), so a pool would only add locking. Each call:
//! 1. goes through [`Registry::dispatch`](relay_core::registry::Registry::dispatch),
//!    which checks the name (`unknown_command`) and the role (`not_permitted`)
//!    *now*, at start time, so a plugin installed by an earlier command is
//!    visible to later ones;
//! 2. runs under `catch_unwind`, so a panicking native handler is a failed
//!    (retryable, code `trap`) attempt, not a dead runtime;
//! 3. flushes the owning plugin's kv before the result is reported, so the
//!    call's `Finished` record never refers to kv writes a crash could undo
//!    (a failed flush makes the attempt a retryable `handler_error`);
//! 4. is classified into an [`AttemptResult`] for the scheduler, with the
//!    plugin version that ran it (`name@version`, for its statuses);
//! 5. counts towards the trial of a freshly updated plugin, which the
//!    [`Installer`] may roll back.
//!
//! The update commands (`_install`, `_rollback`, `_remove`) run here too,
//! through the [`Installer`], between two calls: a command in flight
//! finishes on the old version, the next one runs on the new one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relay_core::plugin::{Event, Invocation};
use relay_core::registry::Owner;
use relay_core::scheduler::AttemptResult;
use relay_core::status::Code;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::handlers::Handlers;
use super::installer::Installer;

/// A finished call.
#[derive(Debug)]
pub struct Done {
    pub invocation: Invocation,
    pub result: AttemptResult,
    /// Events the call emitted (published after the call).
    pub events: Vec<Event>,
    /// The plugin version that ran it (`name@version`).
    pub ran_by: Option<String>,
    /// Wall time of the call (logs, stats).
    pub elapsed: Duration,
}

/// The handler thread's front.
#[derive(Debug)]
pub struct Executor {
    jobs: Option<mpsc::Sender<Invocation>>,
    thread: Option<JoinHandle<()>>,
}

impl Executor {
    /// Starts the thread; finished calls arrive on the returned receiver.
    pub fn spawn(
        handlers: Handlers,
        installer: Option<Installer>,
    ) -> std::io::Result<(Executor, UnboundedReceiver<Done>)> {
        let (jobs, rx) = mpsc::channel::<Invocation>();
        let (done_tx, done_rx) = unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("relay-handler".into())
            .spawn(move || run(handlers, installer, rx, done_tx))?;
        Ok((
            Executor {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            done_rx,
        ))
    }

    /// Hands one call to the thread. Returns false if the thread is gone.
    pub fn submit(&self, invocation: Invocation) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(invocation).is_ok())
    }

    /// Lets the thread finish its current call and exit, without waiting
    /// for it (a handler past the shutdown deadline must not hold the
    /// process; the engines bound wasm calls anyway).
    pub fn detach(mut self) {
        self.jobs.take();
        self.thread.take();
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Closing the channel ends the loop after the current call.
        self.jobs.take();
    }
}

fn run(
    handlers: Handlers,
    mut installer: Option<Installer>,
    jobs: mpsc::Receiver<Invocation>,
    done: UnboundedSender<Done>,
) {
    yield_to_the_data_path();
    while let Ok(invocation) = jobs.recv() {
        let started = Instant::now();
        let (result, events, ran_by) = if relay_core::ota::is_update_command(&invocation.name) {
            let (result, events) = update(&handlers, installer.as_mut(), &invocation);
            (result, events, None)
        } else {
            call(&handlers, installer.as_mut(), &invocation)
        };
        let elapsed = started.elapsed();
        if done
            .send(Done {
                invocation,
                result,
                events,
                ran_by,
                elapsed,
            })
            .is_err()
        {
            break;
        }
    }
}

/// Puts this thread under `SCHED_BATCH` (Linux): a handler is throughput
/// work, and waking it must not preempt the thread that woke it. Without
/// this, handing a call over cost the driver the whole call: the handler
/// thread, woken on the driver's CPU, preempted it before it could start
/// the journal's fsync, where the call is meant to overlap the fsync
/// (measured: ~25 us -> ~5 us per command on the idle path of the
/// end-to-end benchmark). Same nice level; only wake-up preemption goes.
fn yield_to_the_data_path() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain syscall about the calling thread (pid 0) with a
        // valid, initialised parameter.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            tracing::debug!(%error, "SCHED_BATCH refused: the handler thread keeps the default policy");
        }
    }
}

/// An update command, on the installer (absent: the device takes none).
fn update(
    handlers: &Handlers,
    installer: Option<&mut Installer>,
    invocation: &Invocation,
) -> (AttemptResult, Vec<Event>) {
    match installer {
        Some(installer) => handlers.update(|registry| installer.run(registry, invocation)),
        None => (
            AttemptResult::Rejected {
                code: Code::UnknownCommand,
                message: "this device takes no plugin updates".into(),
            },
            Vec::new(),
        ),
    }
}

/// Runs one call, classifies its end and counts it towards a trial.
fn call(
    handlers: &Handlers,
    installer: Option<&mut Installer>,
    invocation: &Invocation,
) -> (AttemptResult, Vec<Event>, Option<String>) {
    let (result, mut events, ran_by) = run_handler(handlers, invocation);
    if let (Some(installer), Some((plugin, _))) = (installer, &ran_by) {
        if installer.on_trial(plugin) {
            events.extend(handlers.update(|r| installer.after_call(r, plugin, &result)));
        }
    }
    (result, events, ran_by.map(|(p, v)| format!("{p}@{v}")))
}

/// Runs one call and classifies its end; with the plugin and version that
/// ran it.
fn run_handler(
    handlers: &Handlers,
    invocation: &Invocation,
) -> (AttemptResult, Vec<Event>, Option<(String, String)>) {
    let mut registry = handlers.lock();
    let ran_by = match registry.resolve(&invocation.name, invocation.role) {
        Ok((_, Owner::Plugin(name))) => registry
            .plugin(name)
            .map(|p| (name.clone(), p.info().version.clone())),
        _ => None,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| registry.dispatch(invocation)));
    // Make the plugin's kv writes durable before the outcome is journaled.
    let mut flushed = Ok(());
    if let Some((name, _)) = &ran_by {
        if let Some(plugin) = registry.plugin_mut(name) {
            flushed = plugin.env_mut().flush();
        }
    }
    drop(registry);
    if let Err(error) = flushed {
        // Not done: its state is not durable. Retry (the kv keeps the writes
        // in memory and the next flush tries again).
        tracing::error!(id = %invocation.id, %error, "plugin kv flush failed");
        let message = format!("the plugin's state could not be saved: {error}");
        return (
            AttemptResult::Failed {
                code: Code::HandlerError,
                message,
                retryable: true,
            },
            Vec::new(),
            ran_by,
        );
    }
    match outcome {
        Ok(dispatched) => {
            let (result, events) = AttemptResult::from_dispatch(dispatched);
            // A call refused before it ran ran on no version.
            let ran_by = ran_by.filter(|_| !matches!(result, AttemptResult::Rejected { .. }));
            (result, events, ran_by)
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".into());
            tracing::error!(id = %invocation.id, name = %invocation.name, %message, "native handler panicked");
            let message = format!("handler panicked: {message}");
            (
                AttemptResult::Failed {
                    code: Code::Trap,
                    message,
                    retryable: true,
                },
                Vec::new(),
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use relay_core::plugin::Role;
    use relay_core::registry::Registry;

    use super::*;

    fn invocation(name: &str) -> Invocation {
        Invocation {
            id: "x-1".into(),
            name: name.into(),
            payload: Vec::new(),
            attempt: 1,
            role: Role::Admin,
        }
    }

    /// The handler thread runs calls under `SCHED_BATCH` (see
    /// `yield_to_the_data_path`): a handler reads its own policy.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn calls_run_under_sched_batch() {
        let handlers = Handlers::new(Registry::new());
        handlers
            .listen("policy", |_: &Invocation| {
                // SAFETY: a plain query about the calling thread.
                let policy = unsafe { libc::sched_getscheduler(0) };
                Ok(Some(vec![u8::try_from(policy).unwrap_or(u8::MAX)]))
            })
            .unwrap();
        let (executor, mut done) = Executor::spawn(handlers, None).unwrap();
        assert!(executor.submit(invocation("policy")));
        let done = done.recv().await.unwrap();
        let AttemptResult::Succeeded { reply } = done.result else {
            panic!("the call failed: {:?}", done.result);
        };
        assert_eq!(reply, Some(vec![libc::SCHED_BATCH as u8]));
    }
}
