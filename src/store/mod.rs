//! Store: control-plane persistence (users, applications, approvals, budgets, audit) behind one interface.
