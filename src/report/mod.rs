//! Reports: usage reports and standard statistics.
