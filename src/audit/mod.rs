//! Audit: the hash-chained, keyed log of every event.
