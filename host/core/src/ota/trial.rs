//! A new version is on trial until it has proven itself: its self-test
//! (when it lists one) and then its first commands. A trap or a time-out in
//! any of them rolls it back; a handler's own error (bad argument, a
//! transient failure it reports) does not, since that is the plugin working
//! as designed. After `commands` calls that neither trapped nor timed out,
//! the version is confirmed.
//!
//! The count is not persisted: a restart during a trial starts the count
//! again (the version stays on trial), which only makes the check longer.

use crate::status::Code;

/// What happens to a version on trial after one of its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still on trial.
    Continue,
    /// Proven: mark it confirmed.
    Confirm,
    /// Broken: go back to the previous version.
    RollBack,
}

/// A version on trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    remaining: u32,
}

impl Trial {
    /// A trial of `commands` calls (0 confirms at the first call).
    pub fn new(commands: u32) -> Self {
        Trial {
            remaining: commands.max(1),
        }
    }

    /// The failure code of a call (`None`: it succeeded).
    pub fn after_call(&mut self, failure: Option<&Code>) -> Verdict {
        if matches!(failure, Some(Code::Trap | Code::TimedOut)) {
            return Verdict::RollBack;
        }
        self.remaining -= 1;
        if self.remaining == 0 {
            Verdict::Confirm
        } else {
            Verdict::Continue
        }
    }

    /// [`Trial::after_call`] with the failure code of a finished attempt.
    pub fn after_attempt(&mut self, result: &crate::scheduler::AttemptResult) -> Verdict {
        match result {
            crate::scheduler::AttemptResult::Failed { code, .. } => self.after_call(Some(code)),
            _ => self.after_call(None),
        }
    }

    pub fn remaining(&self) -> u32 {
        self.remaining
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traps_and_timeouts_roll_back_other_ends_count() {
        let mut t = Trial::new(3);
        assert_eq!(t.after_call(None), Verdict::Continue);
        assert_eq!(
            t.after_call(Some(&Code::InvalidArgument)),
            Verdict::Continue
        );
        assert_eq!(t.after_call(None), Verdict::Confirm);
        assert_eq!(
            Trial::new(3).after_call(Some(&Code::Trap)),
            Verdict::RollBack
        );
        assert_eq!(
            Trial::new(3).after_call(Some(&Code::TimedOut)),
            Verdict::RollBack
        );
        assert_eq!(Trial::new(0).after_call(None), Verdict::Confirm);
        let trapped = crate::scheduler::AttemptResult::Failed {
            code: Code::Trap,
            message: "trap".into(),
            retryable: true,
        };
        assert_eq!(Trial::new(3).after_attempt(&trapped), Verdict::RollBack);
    }
}
