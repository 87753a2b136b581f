//! Reading a released result in assertions, the same way in every query-core test.

use kura::query::QueryOutcome;

/// Whether one of the disclosure notes mentions `text`.
pub fn has_note(o: &QueryOutcome, text: &str) -> bool {
    o.result.disclosure.notes.iter().any(|n| n.contains(text))
}
