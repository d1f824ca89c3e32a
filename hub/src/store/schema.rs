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
            // Plugin rollouts (`crate::rollout`): the bundle, the settings,
            // and one row per target device.
            format!(
                "CREATE TABLE IF NOT EXISTS rollouts (
                    id TEXT PRIMARY KEY,
                    bundle {bytes} NOT NULL,
                    plugin TEXT NOT NULL,
                    version TEXT NOT NULL,
                    created_by TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    rate_per_min BIGINT NOT NULL,
                    abort_failed_percent BIGINT NOT NULL,
                    min_executed BIGINT NOT NULL,
                    device_timeout_ms BIGINT NOT NULL,
                    chunk_bytes BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    reason TEXT,
                    updated_at BIGINT NOT NULL)"
            ),
            "CREATE TABLE IF NOT EXISTS rollout_targets (
                rollout TEXT NOT NULL,
                position BIGINT NOT NULL,
                device TEXT NOT NULL,
                state TEXT NOT NULL,
                code TEXT,
                started_at BIGINT,
                finished_at BIGINT,
                PRIMARY KEY (rollout, device))"
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
