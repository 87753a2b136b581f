-- kura control plane, schema version 9: annual reports (issue 13 §3).

-- The annual reports' own release ledger: every contributor set a published annual report
-- let a reader compute (released cells, and the values its totals reveal), over the
-- patient index of the report extract it was built from. A later report, of any fiscal
-- year and any data version, is checked against all of them (sets of other extracts are
-- carried over through the kept patient index). Kept per fiscal year and data version;
-- identical sets once per extract. Written in the transaction of the report's audit event.
CREATE TABLE annual_ledger (
    extract_id   TEXT NOT NULL,
    set_sha256   TEXT NOT NULL,
    size         BIGINT NOT NULL CHECK (size > 0),
    members      BLOB NOT NULL,
    fiscal_year  INTEGER NOT NULL,
    data_version TEXT NOT NULL,
    published_at TEXT NOT NULL,
    PRIMARY KEY (extract_id, set_sha256)
);
CREATE INDEX annual_ledger_by_year ON annual_ledger(fiscal_year, data_version);

-- One row per generated annual report: what was published, when, for whom, over which data.
-- `sections` holds the whole report (every audience's view is cut from it) when it was
-- computed with every defence on: the same fiscal year on the same data version is
-- published again with the same numbers.
CREATE TABLE annual_reports (
    id            TEXT PRIMARY KEY,
    fiscal_year   INTEGER NOT NULL,
    data_version  TEXT NOT NULL,
    extract_id    TEXT NOT NULL,
    generated_at  TEXT NOT NULL,
    generated_by  TEXT NOT NULL,
    audience      TEXT NOT NULL,
    cells         INTEGER NOT NULL,
    suppressed    INTEGER NOT NULL,
    report_sha256 TEXT NOT NULL,
    sections      TEXT NOT NULL
);
CREATE INDEX annual_reports_by_year ON annual_reports(fiscal_year);
