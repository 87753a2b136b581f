//! Authorization: casbin enforcement of the approval rules.
