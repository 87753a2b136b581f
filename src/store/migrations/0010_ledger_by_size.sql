-- kura control plane, schema version 10: the release ledger read across applications
-- (issue 11). A new cell is compared with the sets released to every other live extract
-- too (their patients carried over through the extracts' ledger pids), so the ledger is
-- also read by size alone.
CREATE INDEX release_ledger_size ON release_ledger(size);
