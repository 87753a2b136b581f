-- kura control plane, schema version 3: the release ledger (suppression mode, issue 11).

-- Every contributor set released to an application, keyed to the extract it indexes
-- (a set is a roaring bitmap over the extract's dense patient index, portable format).
-- Identical sets are kept once per extract. Read by size: only sets within k of a new
-- cell's size can make an unsafe pair. Rows are written in the transaction of the
-- query's audit event and deleted with their extract.
CREATE TABLE release_ledger (
    extract_id  TEXT NOT NULL,
    set_sha256  TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size > 0),
    members     BLOB NOT NULL,
    query_id    TEXT NOT NULL,
    released_at TEXT NOT NULL,
    PRIMARY KEY (extract_id, set_sha256)
);
CREATE INDEX release_ledger_by_size ON release_ledger(extract_id, size);
