CREATE TABLE kaos_sessions (
    id            TEXT PRIMARY KEY,
    incarnation   TEXT NOT NULL,
    turn_count    BIGINT NOT NULL DEFAULT 0,
    message_count BIGINT NOT NULL DEFAULT 0,
    action_count  BIGINT NOT NULL DEFAULT 0,
    committed     BIGINT NOT NULL DEFAULT 0,
    lease_token   TEXT,
    lease_until   BIGINT,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);
CREATE TABLE kaos_messages (
    session_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    turn_number BIGINT NOT NULL,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE kaos_actions (
    session_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    turn_number BIGINT NOT NULL,
    action      TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE kaos_runs (
    run_id        TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL,
    turn_number   BIGINT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'done', 'abandoned')),
    state         TEXT NOT NULL,
    claimed_by    TEXT,
    claimed_ms    BIGINT,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);
CREATE INDEX kaos_runs_by_session ON kaos_runs (session_id, created_ms);
