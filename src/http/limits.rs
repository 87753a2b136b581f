//! HTTP stage, input limits: a length limit on every text field of every JSON request,
//! checked before any handler runs (and so before anything is stored or audited).
//!
//! Guarantees: a JSON body whose strings exceed their limits is refused with `400
//! input_too_long`, naming the field (as a JSON path) and its limit, and nothing of it
//! reaches the store: one client cannot fill the disk (and so stop every answer, which
//! needs its audit write) by sending huge usernames or SQL. Limits: [`USERNAME_CHARS`]
//! for `username` and `application`, [`SQL_CHARS`] for `sql` and a notebook cell's
//! `source`, [`PASSWORD_CHARS`] for `password` (argon2 hashes what it gets), and
//! [`TEXT_CHARS`] for every other string. Counted in characters, not bytes. The outputs
//! and attachments of an imported Jupyter notebook (`notebook.cells[i].outputs`,
//! `.attachments`) are not checked: the import drops them unread (a chart PNG is longer
//! than any text limit), and the body-size limit still bounds them.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;

/// Usernames and application ids.
pub const USERNAME_CHARS: usize = 64;
/// SQL text of a query (or a notebook cell).
pub const SQL_CHARS: usize = 100_000;
/// Passwords.
pub const PASSWORD_CHARS: usize = 1_024;
/// Every other text field (forms, reasons, comments, justifications).
pub const TEXT_CHARS: usize = 20_000;

/// The limit of a string under `key`.
fn limit_of(key: &str) -> usize {
    match key {
        "username" | "application" | "user" => USERNAME_CHARS,
        // A notebook cell's `source` is a query too.
        "sql" | "source" => SQL_CHARS,
        "password" => PASSWORD_CHARS,
        _ => TEXT_CHARS,
    }
}

/// The first string of `v` (at `path`, under `key`) longer than its limit: `(path, limit)`.
pub fn too_long(v: &Value, path: &str, key: &str) -> Option<(String, usize)> {
    match v {
        Value::String(s) => {
            let limit = limit_of(key);
            (s.chars().count() > limit).then(|| (path.to_string(), limit))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| too_long(item, &format!("{path}[{i}]"), key)),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.chars().count() > USERNAME_CHARS {
                return Some((format!("{path}.<key>"), USERNAME_CHARS));
            }
            let sub = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if dropped_unread(&sub) {
                return None;
            }
            too_long(item, &sub, k)
        }),
        _ => None,
    }
}

/// Parts of a request that no handler reads: an imported notebook's outputs and
/// attachments (`notebook::ipynb::import` keeps only cell types and sources).
fn dropped_unread(path: &str) -> bool {
    path.starts_with("notebook.cells[")
        && (path.ends_with("].outputs") || path.ends_with("].attachments"))
}

/// The refusal of a too-long field.
pub fn input_too_long(field: &str, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "input_too_long",
        format!(
            "`{field}` is longer than {limit} characters; shorten it (split a long query, attach long text elsewhere). / `{field}` が {limit} 文字を超えています。短くしてください。"
        ),
    )
}

/// Middleware: check the strings of a JSON request body against their limits.
pub async fn check_lengths(req: Request, next: Next) -> Response {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    // The body-size limit layer outside this one bounds what is buffered here.
    let bytes: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is larger than the server accepts (body_limit_bytes). / リクエストが大きすぎます。",
            )
            .into_response();
        }
    };
    // A body that is not JSON is left to the handler's own (clear) parse error.
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
        && let Some((field, limit)) = too_long(&v, "", "")
    {
        return input_too_long(&field, limit).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_field_has_its_limit_and_the_path_is_named() {
        let ok =
            json!({"username": "u".repeat(64), "sql": "s".repeat(100_000), "form": {"title": "t"}});
        assert_eq!(too_long(&ok, "", ""), None);
        let long_user = json!({"username": "u".repeat(65)});
        assert_eq!(
            too_long(&long_user, "", ""),
            Some(("username".into(), USERNAME_CHARS))
        );
        let nested = json!({"cells": [{"sql": "x"}, {"sql": "x".repeat(100_001)}]});
        assert_eq!(
            too_long(&nested, "", ""),
            Some(("cells[1].sql".into(), SQL_CHARS))
        );
        let text = json!({"named_users": [{"affiliation": "a".repeat(20_001)}]});
        assert_eq!(
            too_long(&text, "", ""),
            Some(("named_users[0].affiliation".into(), TEXT_CHARS))
        );
        // Characters, not bytes: 64 kanji are a valid username.
        assert_eq!(
            too_long(&json!({"username": "蔵".repeat(64)}), "", ""),
            None
        );
    }

    #[test]
    fn only_an_imported_notebooks_outputs_escape_the_text_limit() {
        let png = "i".repeat(TEXT_CHARS + 1);
        let import = json!({"notebook": {"cells": [{"outputs": [{"data": {"image/png": png}}],
            "attachments": {"a.png": {"image/png": png}}, "source": "x"}]}});
        assert_eq!(too_long(&import, "", ""), None);
        // The same strings anywhere else are still refused.
        let metadata = json!({"notebook": {"cells": [{"metadata": {"x": png}}]}});
        assert_eq!(
            too_long(&metadata, "", ""),
            Some(("notebook.cells[0].metadata.x".into(), TEXT_CHARS))
        );
        let elsewhere = json!({"cells": [{"outputs": [png]}]});
        assert_eq!(
            too_long(&elsewhere, "", ""),
            Some(("cells[0].outputs[0]".into(), TEXT_CHARS))
        );
        let top = json!({"notebook": {"outputs": png}});
        assert!(too_long(&top, "", "").is_some());
    }
}
