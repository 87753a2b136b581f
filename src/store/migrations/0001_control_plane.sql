-- kura control plane, schema version 1.
-- Times are RFC 3339 UTC text; JSON columns hold serde_json documents.

CREATE TABLE users (
    username         TEXT PRIMARY KEY,
    password_hash    TEXT NOT NULL,
    roles            TEXT NOT NULL,              -- JSON array of role names
    manufacturer     TEXT,                       -- PMS teams only
    display_name     TEXT NOT NULL DEFAULT '',
    affiliation      TEXT NOT NULL DEFAULT '',
    title            TEXT NOT NULL DEFAULT '',
    disabled         INTEGER NOT NULL DEFAULT 0,
    execution_errors INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL
);

-- Failed-login counters keyed by the *attempted* name, so that unknown names lock
-- exactly like real ones and lockout does not reveal which accounts exist.
CREATE TABLE login_attempts (
    username     TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    locked_until TEXT
);

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,                -- SHA-256 of the bearer token
    username    TEXT NOT NULL REFERENCES users(username),
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE TABLE applications (
    id             TEXT PRIMARY KEY,
    status         TEXT NOT NULL,
    applicant      TEXT NOT NULL REFERENCES users(username),
    form           TEXT NOT NULL,                -- JSON ApplicationForm
    approval       TEXT,                         -- JSON Approval, once approved
    pending_change TEXT,                         -- JSON ApplicationForm of a change application
    revoked_reason TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE application_history (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    application_id TEXT NOT NULL REFERENCES applications(id),
    at             TEXT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    from_status    TEXT,
    to_status      TEXT NOT NULL,
    reason         TEXT
);

CREATE TABLE pledges (
    application_id TEXT NOT NULL REFERENCES applications(id),
    username       TEXT NOT NULL REFERENCES users(username),
    accepted_at    TEXT NOT NULL,
    PRIMARY KEY (application_id, username)
);

CREATE TABLE recommendations (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    application_id TEXT NOT NULL REFERENCES applications(id),
    at             TEXT NOT NULL,
    reviewer       TEXT NOT NULL,
    text           TEXT NOT NULL
);

CREATE TABLE extracts (
    application_id TEXT PRIMARY KEY,
    extract_id     TEXT NOT NULL,
    path           TEXT NOT NULL,
    built_at       TEXT NOT NULL,
    destroyed_at   TEXT
);

CREATE TABLE budgets (
    application_id TEXT NOT NULL,
    fiscal_year    INTEGER NOT NULL,
    epsilon_spent  REAL NOT NULL,
    PRIMARY KEY (application_id, fiscal_year)
);

CREATE TABLE queries (
    query_id       TEXT PRIMARY KEY,
    application_id TEXT NOT NULL,
    username       TEXT NOT NULL,
    at             TEXT NOT NULL,
    sql            TEXT NOT NULL,
    outcome        TEXT NOT NULL,                -- ok | denied | error
    code           TEXT,
    duration_ms    INTEGER,
    epsilon_spent  REAL,
    suppressed_cells INTEGER,
    dropped_rows   INTEGER
);
CREATE INDEX queries_by_application ON queries(application_id, at);

CREATE TABLE notebooks (
    id             TEXT PRIMARY KEY,
    owner          TEXT NOT NULL REFERENCES users(username),
    application_id TEXT NOT NULL,
    title          TEXT NOT NULL,
    cells          TEXT NOT NULL,                -- JSON array
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE releases (
    id             TEXT PRIMARY KEY,
    application_id TEXT NOT NULL,
    requester      TEXT NOT NULL REFERENCES users(username),
    query_id       TEXT NOT NULL,
    justification  TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at     TEXT NOT NULL
);

CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    application TEXT,
    outcome     TEXT NOT NULL,
    code        TEXT,
    reference   TEXT,
    event       TEXT NOT NULL,                   -- canonical JSON, covered by mac
    prev        TEXT NOT NULL,
    mac         TEXT NOT NULL
);
CREATE INDEX audit_by_actor ON audit_log(actor, seq);
CREATE INDEX audit_by_application ON audit_log(application, seq);

-- Append-only in normal operation. Tampering (e.g. dropping these triggers with a raw
-- SQLite client) is still detected by `kura audit verify` through the keyed chain.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
