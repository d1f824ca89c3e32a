//! What the device publishes (statuses, events, health), and the one coalescing
//! rule for a backlog of them.
//!
//! Under load an intermediate status (`accepted`, `running`) is dropped when
//! a later status of the same command is already in the same backlog: the app
//! still sees a consistent sequence that ends in the final status, which is
//! never dropped, and every `retrying` is kept (it carries `next_attempt_at`).
//! The machine applies it to what one commit releases; the Linux publisher
//! applies it again to whatever piled up while the link was slow.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use super::health::Health;
use crate::status::{State, Status};

/// One outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Status(Status),
    /// `event/<name>` with a msgpack payload.
    Event {
        name: String,
        payload: Vec<u8>,
    },
    /// The retained health message (never coalesced).
    Health(Health),
}

impl Outgoing {
    /// The command id if this is a final status (its delivery is tracked).
    pub fn final_id(&self) -> Option<&str> {
        match self {
            Outgoing::Status(s) if s.is_final() && !s.id.is_empty() => Some(&s.id),
            _ => None,
        }
    }
}

/// Drops intermediate statuses superseded later in `round`; returns how many.
pub fn coalesce(round: &mut Vec<Outgoing>) -> usize {
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, message) in round.iter().enumerate() {
        if let Outgoing::Status(s) = message {
            if !s.id.is_empty() {
                last.insert(s.id.as_str(), i);
            }
        }
    }
    let superseded: Vec<bool> = round
        .iter()
        .enumerate()
        .map(|(i, message)| match message {
            Outgoing::Status(s) => {
                matches!(s.status, State::Accepted | State::Running)
                    && last.get(s.id.as_str()).is_some_and(|&j| j > i)
            }
            Outgoing::Event { .. } | Outgoing::Health(_) => false,
        })
        .collect();
    let before = round.len();
    let mut flags = superseded.into_iter();
    round.retain(|_| !flags.next().unwrap_or(false));
    before - round.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn st(id: &str, state: State) -> Outgoing {
        Outgoing::Status(Status::new(id, "n", state, 0, 0))
    }

    #[test]
    fn coalesces_only_superseded_intermediates() {
        let mut round = vec![
            st("a", State::Accepted),
            st("b", State::Accepted),
            st("a", State::Running),
            Outgoing::Event {
                name: "e".into(),
                payload: vec![],
            },
            st("a", State::Retrying),
            st("a", State::Running),
            st("a", State::Succeeded),
            st("b", State::Running),
        ];
        assert_eq!(coalesce(&mut round), 4);
        assert_eq!(
            round,
            vec![
                Outgoing::Event {
                    name: "e".into(),
                    payload: vec![]
                },
                st("a", State::Retrying),
                st("a", State::Succeeded),
                st("b", State::Running),
            ]
        );
    }
}
