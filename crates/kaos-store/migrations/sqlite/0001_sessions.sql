CREATE TABLE kaos_sessions (
    id            TEXT PRIMARY KEY,
    incarnation   TEXT NOT NULL,
    turn_count    INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    action_count  INTEGER NOT NULL DEFAULT 0,
    committed     INTEGER NOT NULL DEFAULT 0,
    lease_token   TEXT,
    lease_until   INTEGER,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
);
CREATE TABLE kaos_messages (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    turn_number INTEGER NOT NULL,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE kaos_actions (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    turn_number INTEGER NOT NULL,
    action      TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE kaos_runs (
    run_id        TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL,
    turn_number   INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'done', 'abandoned')),
    state         TEXT NOT NULL,
    claimed_by    TEXT,
    claimed_ms    INTEGER,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
);
CREATE INDEX kaos_runs_by_session ON kaos_runs (session_id, created_ms);
