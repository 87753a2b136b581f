-- kura schema version 4: the output airlock (issue 13 §1). Every row here is written in
-- the same transaction as the audit event that records it.

-- Every answer as it was released to the researcher, written with the query's history row
-- and audit event (whose detail carries `result_sha256`, the SHA-256 of `answer`).
-- `answer` is canonical JSON {"result": <the released result>, "trace": <per-cell
-- disclosure trace>}; `set_hashes` names the release-ledger sets of the answer (JSON
-- array of SHA-256, in the order the trace's cells refer to them).
CREATE TABLE query_results (
    query_id         TEXT PRIMARY KEY,
    application_id   TEXT NOT NULL,
    username         TEXT NOT NULL,
    extract_id       TEXT NOT NULL,
    mode             TEXT NOT NULL,
    plan_fingerprint TEXT NOT NULL,
    answer           TEXT NOT NULL,
    result_sha256    TEXT NOT NULL,
    set_hashes       TEXT NOT NULL,
    at               TEXT NOT NULL
);
CREATE INDEX query_results_by_application ON query_results(application_id);

-- A release request now names one or more outputs, the intended publication, how many
-- distinct reviewers must approve it, and, when the re-check before an approval failed,
-- why it can no longer be approved (status `invalidated`).
ALTER TABLE releases ADD COLUMN publication TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN checkers_required INTEGER NOT NULL DEFAULT 1;
ALTER TABLE releases ADD COLUMN decided_at TEXT;
ALTER TABLE releases ADD COLUMN invalid_code TEXT;
ALTER TABLE releases ADD COLUMN invalid_reason TEXT;
ALTER TABLE releases ADD COLUMN seal TEXT;

-- One output of a request: the snapshot taken when it was requested. `snapshot` is what
-- reviewers and the release record show; `internal` what only the airlock reads (the
-- ledger sets of the released cells); `seal` the SHA-256 over both, also written into
-- the request's audit event.
CREATE TABLE release_outputs (
    release_id TEXT NOT NULL REFERENCES releases(id),
    position   INTEGER NOT NULL,
    query_id   TEXT NOT NULL,
    snapshot   TEXT NOT NULL,
    internal   TEXT NOT NULL,
    seal       TEXT NOT NULL,
    PRIMARY KEY (release_id, position)
);

-- One reviewer's decision on a request; a reviewer decides a request at most once.
CREATE TABLE release_decisions (
    release_id TEXT NOT NULL REFERENCES releases(id),
    reviewer   TEXT NOT NULL,
    decision   TEXT NOT NULL,
    comment    TEXT NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (release_id, reviewer)
);

-- The files of a request: rendered when it is requested (tables, charts), and the
-- release record added when it is approved. Only approved requests' files are served.
CREATE TABLE release_files (
    release_id TEXT NOT NULL REFERENCES releases(id),
    name       TEXT NOT NULL,
    media_type TEXT NOT NULL,
    content    BLOB NOT NULL,
    sha256     TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    PRIMARY KEY (release_id, name)
);

-- Every download of an approved file (the register's "what left, when, for whom").
CREATE TABLE release_downloads (
    release_id TEXT NOT NULL REFERENCES releases(id),
    name       TEXT NOT NULL,
    username   TEXT NOT NULL,
    at         TEXT NOT NULL,
    sha256     TEXT NOT NULL
);
CREATE INDEX release_downloads_by_release ON release_downloads(release_id, at);
