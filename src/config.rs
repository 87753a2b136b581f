//! Configuration (placeholder during build).
