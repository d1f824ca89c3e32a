//! The scheduler's vocabulary: what it is configured with ([`Policy`]), what
//! it asks the runtime to do ([`Action`], [`Start`]) and what the runtime
//! reports back about an attempt ([`AttemptResult`]).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::engine::PluginError;
use crate::envelope::Kind;
use crate::journal::record::Record;
use crate::plugin::{ErrorKind, HandlerResult, Invocation};
use crate::status::{Code, Status};

/// Retry and dedupe settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Pause between a retryable failure and the next attempt (ms).
    pub retry_delay_ms: u64,
    /// Attempts in all, the first included (0 is treated as 1).
    pub max_attempts: u32,
    /// Finished outcomes kept for dedupe and status queries; the oldest is
    /// forgotten first. A duplicate of a forgotten command runs again.
    pub remembered_outcomes: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retry_delay_ms: 5_000,
            max_attempts: 5,
            remembered_outcomes: 1_024,
        }
    }
}

impl Policy {
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

/// One thing the runtime must do, in the order given.
///
/// Ordering contract: the runtime appends `Journal` records to storage in
/// the order they appear (across calls too), and publishes a `Publish`
/// status only once every record before it is durable (so a status never
/// announces what a crash could undo). `Start` is covered by
/// [`Start::persist_first`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Append this record to the journal.
    Journal(Record),
    /// Publish this status on `<prefix>/<device>/status`.
    Publish(Status),
    /// Run one attempt; report its end with [`super::Scheduler::finish`].
    Start(Start),
}

/// Run this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// What the handler receives; `attempt` is 1-based.
    pub invocation: Invocation,
    pub kind: Kind,
    /// When true, the journal must be synced before the handler runs (the
    /// `Started` record, and every record before it, must be durable).
    /// When false the runtime may run the handler while they wait for the
    /// next group commit. It is true after a restart until every command
    /// that was pending at the restart is final (and for the start right
    /// after): a command that crashes the host then has each attempt on
    /// disk before it runs, so the attempt counter advances and the poison
    /// pill ends `interrupted` instead of looping forever.
    pub persist_first: bool,
}

/// How an attempt ended, as the runtime reports it to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The handler succeeded; `reply` is one raw msgpack value, if any.
    Succeeded { reply: Option<Vec<u8>> },
    /// The handler ran and failed. Retried (commands only, never RPCs) when
    /// `retryable` and attempts are left; otherwise final `failed`.
    Failed {
        code: Code,
        message: String,
        retryable: bool,
    },
    /// The command never reached a handler (`unknown_command`,
    /// `not_permitted`, ...): final `rejected`, never retried.
    Rejected { code: Code, message: String },
}

impl AttemptResult {
    /// Classifies a handler's own result: a transient error is retried as
    /// `handler_error`; `invalid-argument`, `out-of-bounds` and `permanent`
    /// errors are final (`invalid_argument`, `out_of_bounds`,
    /// `handler_error`).
    pub fn from_handler(result: HandlerResult) -> Self {
        match result {
            Ok(reply) => AttemptResult::Succeeded { reply },
            Err(e) => {
                let code = match e.kind {
                    ErrorKind::Transient | ErrorKind::Permanent => Code::HandlerError,
                    ErrorKind::InvalidArgument => Code::InvalidArgument,
                    ErrorKind::OutOfBounds => Code::OutOfBounds,
                };
                AttemptResult::Failed {
                    code,
                    message: e.message,
                    retryable: e.kind.is_retryable(),
                }
            }
        }
    }

    /// Classifies what [`Registry::dispatch`](crate::registry::Registry::dispatch)
    /// returned, with the events the call emitted: a refusal to dispatch
    /// (unknown command, role) is `rejected`, the rest as above.
    pub fn from_dispatch(
        outcome: Result<crate::plugin::CallOutcome, crate::registry::DispatchError>,
    ) -> (Self, Vec<crate::plugin::Event>) {
        use crate::registry::DispatchError;
        match outcome {
            Ok(call) => (AttemptResult::from_handler(call.result), call.events),
            Err(DispatchError::Plugin(e)) => (AttemptResult::from_plugin_error(&e), Vec::new()),
            Err(e) => (
                AttemptResult::Rejected {
                    code: e.code(),
                    message: e.to_string(),
                },
                Vec::new(),
            ),
        }
    }

    /// Classifies a failed call: traps, time-outs and engine errors are
    /// retried; an oversize reply (`too_large`) is not, it would only fail
    /// again.
    pub fn from_plugin_error(error: &PluginError) -> Self {
        let code = error.code();
        let retryable = matches!(code, Code::Trap | Code::TimedOut | Code::HandlerError);
        AttemptResult::Failed {
            code,
            message: error.to_string(),
            retryable,
        }
    }
}

/// A call the scheduler cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("command {id:?} is not the one running")]
    NotRunning { id: String },
}
