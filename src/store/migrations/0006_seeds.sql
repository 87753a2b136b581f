-- kura schema version 6: the seeds' remaining duties (issue 16). Portable SQL (also runs on
-- PostgreSQL); times are RFC 3339 text like the rest.

-- A medical institution's account is bound to one facility code (seed 001 item 8).
ALTER TABLE users ADD COLUMN facility TEXT;

-- Approval and refusal notices (seed 002 第2章6: 承認通知書, 理由を付した不承認の通知),
-- issued in the same transaction as the decision and its audit event. `content` is the
-- notice as issued (JSON), so a later change of the application does not change it.
CREATE TABLE notices (
    id             TEXT PRIMARY KEY,             -- N-<year>-<nnnn>
    application_id TEXT NOT NULL,
    kind           TEXT NOT NULL,                -- approval | refusal
    issued_at      TEXT NOT NULL,
    issued_by      TEXT NOT NULL,
    content        TEXT NOT NULL
);
CREATE INDEX notices_by_application ON notices(application_id, issued_at);
