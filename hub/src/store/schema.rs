//! The tables, written once for both backends. Only the sequence column and
//! the byte type differ (SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT` and
//! `BLOB`, Postgres's `BIGSERIAL` and `BYTEA`); every query is shared.

/// Which database the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// `CREATE` statements, idempotent.
    pub fn schema(self) -> Vec<String> {
        let (serial, bytes) = match self {
            Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
            Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
        };
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS requests (
                    seq {serial},
                    device TEXT NOT NULL,
                    id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    role TEXT NOT NULL,
                    payload {bytes} NOT NULL,
                    submitted_by TEXT NOT NULL,
                    submitted_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL,
                    deadline_at BIGINT,
                    state TEXT NOT NULL,
                    attempt BIGINT NOT NULL,
                    code TEXT,
                    message TEXT,
                    reply {bytes},
                    updated_at BIGINT NOT NULL,
                    UNIQUE (device, id))"
            ),
            "CREATE INDEX IF NOT EXISTS requests_by_state ON requests (state, seq)".into(),
            "CREATE INDEX IF NOT EXISTS requests_by_device ON requests (device, seq)".into(),
            "CREATE INDEX IF NOT EXISTS requests_by_update ON requests (updated_at)".into(),
            "CREATE TABLE IF NOT EXISTS transitions (
                request_seq BIGINT NOT NULL,
                at BIGINT NOT NULL,
                state TEXT NOT NULL,
                attempt BIGINT NOT NULL,
                code TEXT,
                message TEXT)"
                .into(),
            "CREATE INDEX IF NOT EXISTS transitions_by_request ON transitions (request_seq)".into(),
            "CREATE TABLE IF NOT EXISTS devices (
                device TEXT PRIMARY KEY,
                online BIGINT NOT NULL,
                boot BIGINT NOT NULL,
                session BIGINT NOT NULL,
                seen_at BIGINT NOT NULL)"
                .into(),
            // Several instances: who forwards which device, until when.
            "CREATE TABLE IF NOT EXISTS leases (
                device TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                until BIGINT NOT NULL)"
                .into(),
            "CREATE TABLE IF NOT EXISTS cancel_asks (
                device TEXT NOT NULL,
                id TEXT NOT NULL,
                asked_at BIGINT NOT NULL,
                PRIMARY KEY (device, id))"
                .into(),
        ]
    }
}
