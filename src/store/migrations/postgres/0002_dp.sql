-- kura control plane, schema version 2 (PostgreSQL twin of ../0002_dp.sql: the same
-- tables; times of the legacy move written with to_char): differential-privacy budget
-- ledger and the release cache.

-- One row per DP query id. `reserved` rows count against the budget like `spent` ones;
-- a reservation becomes `spent` in the transaction that records the query and its audit
-- event, or `released` when the data plane refused or failed. Reservations found when the
-- store opens (a crash between reserve and commit) or older than the query timeout are
-- converted to `spent`: a crash may over-charge, never under-charge.
CREATE TABLE budget_ledger (
    query_id       TEXT PRIMARY KEY,
    application_id TEXT NOT NULL,
    fiscal_year    BIGINT NOT NULL,
    epsilon        DOUBLE PRECISION NOT NULL CHECK (epsilon >= 0),
    state          TEXT NOT NULL CHECK (state IN ('reserved', 'spent', 'released')),
    reserved_at    TEXT NOT NULL,
    settled_at     TEXT
);
CREATE INDEX budget_ledger_by_application ON budget_ledger(application_id, fiscal_year, state);

-- Spends recorded by schema version 1 (one running total per application and fiscal
-- year) move into the ledger as one `spent` row each; the old table is dropped so there
-- is exactly one source of truth.
INSERT INTO budget_ledger (query_id, application_id, fiscal_year, epsilon, state, reserved_at, settled_at)
SELECT 'legacy_' || application_id || '_' || fiscal_year, application_id, fiscal_year, epsilon_spent,
       'spent', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM budgets WHERE epsilon_spent > 0;
DROP TABLE budgets;

-- Released DP answers, re-released for an identical question on the same extract
-- version (and the same ε and bounds) without spending budget again.
CREATE TABLE dp_release_cache (
    application_id         TEXT NOT NULL,
    release_key            TEXT NOT NULL,
    extract_id             TEXT NOT NULL,
    epsilon                DOUBLE PRECISION NOT NULL,
    max_groups_per_patient BIGINT NOT NULL,
    max_rows_per_group     BIGINT NOT NULL,
    result                 TEXT NOT NULL,     -- JSON ReleasedResult as first released
    query_id               TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    PRIMARY KEY (application_id, release_key, extract_id, epsilon, max_groups_per_patient, max_rows_per_group)
);
