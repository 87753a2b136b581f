//! Authentication: named accounts, argon2id passwords, session tokens, lockout.
