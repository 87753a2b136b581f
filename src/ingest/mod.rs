//! Ingest: turns source registry extracts (with direct identifiers) into pseudonymised, consent-filtered Parquet plus a manifest. Also holds the synthetic source generator.
