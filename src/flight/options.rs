//! Flight SQL stage, connection options: the application and the DP parameters of a call,
//! read from its headers (gRPC metadata), which ADBC sets with
//! `adbc.flight.sql.rpc.call_header.<name>` and the JDBC driver passes from unknown URL
//! properties. A client changes application by changing the header; every call carries
//! its own, so nothing is remembered between calls.
//!
//! | header | meaning |
//! |---|---|
//! | `kura.application` | the approval id (or PMS standing scope id) every statement and catalogue call runs under |
//! | `kura.mode` | `suppression` or `dp` (default: what the approval sets) |
//! | `kura.epsilon` | ε of each DP statement |
//! | `kura.max_groups_per_patient`, `kura.max_rows_per_group` | DP contribution bounds (default: the approval's) |
//!
//! Guarantees: a malformed value is refused naming the header and the fix (never
//! ignored); the values become the same [`QueryRequest`] the HTTP API builds from its JSON
//! body, so they are validated by the same code (`QueryRequest::dp_params`).

use tonic::Status;
use tonic::metadata::MetadataMap;

use super::status;
use crate::privacy::result::DisclosureMode;
use crate::query::QueryRequest;

pub const APPLICATION: &str = "kura.application";
pub const MODE: &str = "kura.mode";
pub const EPSILON: &str = "kura.epsilon";
pub const MAX_GROUPS: &str = "kura.max_groups_per_patient";
pub const MAX_ROWS: &str = "kura.max_rows_per_group";

/// The longest application id accepted (ids are short; a long one is a mistake).
const MAX_APPLICATION: usize = 64;

/// The header `name`; if it was sent more than once, the last value (ADBC appends a call
/// header set again on a connection rather than replacing it, so the latest is the last).
fn text<'a>(md: &'a MetadataMap, name: &str) -> Result<Option<&'a str>, Status> {
    match md.get_all(name).iter().next_back() {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            status::invalid_request(&format!(
                "The `{name}` header is not text. / ヘッダー {name} が不正です。"
            ))
        }),
    }
}

fn bad(name: &str, fix: &str) -> Status {
    status::invalid_request(&format!(
        "The `{name}` header is not valid: {fix}. / ヘッダー {name} の値が不正です（{fix}）。"
    ))
}

/// The application of a call; refused when missing.
pub fn application(md: &MetadataMap) -> Result<String, Status> {
    match text(md, APPLICATION)? {
        Some(a) if !a.is_empty() && a.len() <= MAX_APPLICATION => Ok(a.to_string()),
        Some(_) => Err(bad(APPLICATION, "give an approval id such as A-2026-0001")),
        None => Err(status::status(
            412,
            "application_required",
            "Choose the application: set the `kura.application` header (ADBC: adbc.flight.sql.rpc.call_header.kura.application; JDBC: the URL property kura.application) to your approval id, e.g. A-2026-0001. / 利用する申請を kura.application ヘッダーで指定してください（例: A-2026-0001）。",
            &crate::query::new_ref(),
        )),
    }
}

fn number<T: std::str::FromStr>(
    md: &MetadataMap,
    name: &str,
    fix: &str,
) -> Result<Option<T>, Status> {
    match text(md, name)? {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| bad(name, fix)),
    }
}

/// The query request of `sql` under the call's options.
pub fn request(md: &MetadataMap, sql: String) -> Result<QueryRequest, Status> {
    let mode = match text(md, MODE)? {
        None | Some("") => None,
        Some("suppression") => Some(DisclosureMode::Suppression),
        Some("dp") => Some(DisclosureMode::Dp),
        Some(_) => return Err(bad(MODE, "use suppression or dp")),
    };
    Ok(QueryRequest {
        application: application(md)?,
        sql,
        mode,
        epsilon: number(md, EPSILON, "give a positive number such as 0.5")?,
        max_groups_per_patient: number(md, MAX_GROUPS, "give a whole number from 1 to 1000")?,
        max_rows_per_group: number(md, MAX_ROWS, "give a whole number from 1 to 1000")?,
        // The caller's address is the service's to set (`auth::Caller::origin`).
        origin: crate::policy::place::Origin::UNKNOWN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_sent_again_takes_its_last_value() {
        let mut md = MetadataMap::new();
        md.append(APPLICATION, "A-DEMO-0001".parse().unwrap());
        assert_eq!(application(&md).unwrap(), "A-DEMO-0001");
        md.append(APPLICATION, "A-DEMO-0003".parse().unwrap());
        assert_eq!(application(&md).unwrap(), "A-DEMO-0003");
        // Control: no header at all is refused with the fix.
        let e = application(&MetadataMap::new()).unwrap_err();
        assert!(e.message().contains("application_required"), "{e:?}");
    }
}
