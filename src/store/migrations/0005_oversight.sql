-- kura schema version 5: oversight (issue 13 §2 §4): audit alerts, filed usage reports
-- and publication reports. Every row here is written in the same transaction as the
-- audit event that records it.

-- An alert raised by a rule of audit/*.toml. `seq` is the audit entry of the alert
-- itself (action `alert.raise`); `events` the entries that raised it.
CREATE TABLE alerts (
    id           TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL,
    rule         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    at           TEXT NOT NULL,
    username     TEXT,
    application  TEXT,
    events       TEXT NOT NULL,                  -- JSON array of audit seq
    message_ja   TEXT NOT NULL,
    message_en   TEXT NOT NULL,
    status       TEXT NOT NULL,                  -- open | acknowledged
    ack_by       TEXT,
    ack_at       TEXT,
    ack_comment  TEXT,
    dedupe       TEXT NOT NULL,                  -- what makes two findings the same alert
    notified_at  TEXT                            -- webhook delivered (NULL: not yet / no webhook)
);
CREATE INDEX alerts_by_dedupe ON alerts(rule, dedupe, at);
CREATE INDEX alerts_by_status ON alerts(status, at);

-- A usage report (使用状況報告書) filed by the applicant: the report as filed and the
-- audit head it was built from.
CREATE TABLE usage_reports (
    application_id TEXT NOT NULL,
    fiscal_year    INTEGER NOT NULL,
    filed_by       TEXT NOT NULL,
    filed_at       TEXT NOT NULL,
    audit_head     TEXT NOT NULL,
    report         TEXT NOT NULL,                -- JSON UsageReport
    PRIMARY KEY (application_id, fiscal_year)
);

-- Publication reports (seed 002 様式2 item 3): what was published from an application.
CREATE TABLE publications (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    application_id TEXT NOT NULL,
    citation       TEXT NOT NULL,
    published_on   TEXT NOT NULL,
    releases       TEXT NOT NULL,                -- JSON array of release ids
    recorded_by    TEXT NOT NULL,
    recorded_at    TEXT NOT NULL
);
CREATE INDEX publications_by_application ON publications(application_id, id);
