//! Web console assets served by the same binary.
