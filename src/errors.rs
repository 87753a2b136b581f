//! Error display shared by every layer: an error and its causes on one line, for
//! operators (CLI messages, logs) and auditors (internal detail in the audit log).

/// An error and its causes on one line, outermost first; a cause already contained in
/// the text before it is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
