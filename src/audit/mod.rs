//! Audit stage: the hash-chained, keyed (HMAC-SHA256) log of every event.
//!
//! Each entry stores the event as canonical JSON (object keys sorted, no whitespace), the
//! MAC of the previous entry, and its own MAC over `seq`, time, previous MAC and event.
//! The MAC is keyed with the operator's audit key, so someone who edits the database
//! without the key cannot rebuild a valid chain: editing, deleting or reordering rows is
//! found by [`verify`]. Entries are appended inside the caller's transaction, so a state
//! change and its audit event commit together or not at all ("no audit, no answer").
//!
//! Verification ([`verify`]) streams the log in `seq` order (memory does not grow with
//! the log) and checks every stored column: the plain columns that filters and reports
//! read (`actor`, `action`, `application`, `outcome`, `code`, `reference`) must equal the
//! signed event, so an insider cannot relabel a row out of an auditor's filter.
//!
//! Truncating the newest entries leaves a shorter valid chain; signed checkpoints of the
//! head ([`checkpoint`]), written on a schedule to files the operator ships elsewhere,
//! detect it (`kura audit verify --checkpoint FILE`, and at every start).

pub mod alert;
// production (issue 14): signed checkpoints of the chain head
pub mod checkpoint;

use std::path::Path;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AnyConnection, Row};

/// The MAC that stands before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors of the audit layer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("audit event is not serialisable: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "audit key missing: {0}. Create one with `head -c 32 /dev/urandom | xxd -p -c 64 > audit.key` \
         and point `audit_key_file` (or KURA_AUDIT_KEY_FILE) at it, or set KURA_AUDIT_KEY to 64 hex digits / \
         監査鍵がありません。上記の方法で作成してください"
    )]
    KeyMissing(String),
    #[error(
        "audit key is invalid: {0}; it must be at least 32 bytes written as hex / 監査鍵が不正です（32 バイト以上の 16 進数）"
    )]
    KeyInvalid(String),
}

/// The operator's audit key. Never stored in the repository or the database.
#[derive(Clone)]
pub struct AuditKey(hmac::Key);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(…)")
    }
}

impl AuditKey {
    /// Build from raw key bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuditError> {
        if bytes.len() < 32 {
            return Err(AuditError::KeyInvalid(format!(
                "{} bytes given",
                bytes.len()
            )));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// A non-reversible identifier of the key for the operator's screen: the first 8 bytes
    /// of an HMAC of a fixed label, in hex. Says which key signs the chain, never the key.
    pub fn fingerprint(&self) -> String {
        hex::encode(&hmac::sign(&self.0, b"kura audit key fingerprint v1").as_ref()[..8])
    }

    /// Parse a hex string (whitespace trimmed), as stored in a key file or env variable.
    pub fn from_hex(text: &str) -> Result<Self, AuditError> {
        let bytes = hex::decode(text.trim()).map_err(|e| AuditError::KeyInvalid(e.to_string()))?;
        Self::from_bytes(&bytes)
    }

    /// Read a hex key file.
    pub fn from_file(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuditError::KeyMissing(format!("cannot read {}: {e}", path.display())))?;
        Self::from_hex(&text)
    }

    fn mac(&self, data: &[u8]) -> String {
        hex::encode(hmac::sign(&self.0, data).as_ref())
    }

    fn check(&self, data: &[u8], mac_hex: &str) -> bool {
        match hex::decode(mac_hex) {
            Ok(tag) => hmac::verify(&self.0, data, &tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// One event to record. `detail` carries action-specific fields (SQL, plan fingerprint,
/// suppression summary, reasons, internal error detail, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    /// Account that acted (or the attempted username for failed logins; `system` for jobs).
    pub actor: String,
    /// Dotted action name, e.g. `session.login`, `application.approve`, `query.run`.
    pub action: String,
    /// Application or standing scope concerned, if any.
    pub application: Option<String>,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// Stable error code for refusals and errors.
    pub code: Option<String>,
    /// Reference id given to the caller (the `ref` of an API error or the query id).
    pub reference: Option<String>,
    pub detail: Value,
}

impl AuditEvent {
    pub fn ok(actor: &str, action: &str, application: Option<&str>, detail: Value) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            application: application.map(Into::into),
            outcome: "ok".into(),
            code: None,
            reference: None,
            detail,
        }
    }

    pub fn denied(
        actor: &str,
        action: &str,
        application: Option<&str>,
        code: &str,
        detail: Value,
    ) -> Self {
        Self {
            outcome: "denied".into(),
            code: Some(code.into()),
            ..Self::ok(actor, action, application, detail)
        }
    }

    pub fn with_reference(mut self, reference: &str) -> Self {
        self.reference = Some(reference.into());
        self
    }
}

/// A stored entry, as listed to auditors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub event: Value,
    pub prev: String,
    pub mac: String,
}

/// The result of verifying the chain: `{"ok": true, "events": N, "head": "…"}` or the
/// first broken link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Verification {
    pub ok: bool,
    pub events: i64,
    pub head: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Serialise a JSON value canonically: object keys sorted, no insignificant whitespace.
/// Done by hand so that no serde_json feature (e.g. `preserve_order`, which another
/// crate may switch on) can change the bytes that are MACed.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn signed_bytes(seq: i64, at: &str, prev: &str, event_json: &str) -> Vec<u8> {
    // Length-free framing is safe: seq and at contain no '\n', prev is hex, event is JSON.
    format!("kura-audit-v1\n{seq}\n{at}\n{prev}\n{event_json}").into_bytes()
}

/// Append one event inside the caller's transaction and return its record. The caller's
/// transaction must hold the write lock (`BEGIN IMMEDIATE`) so `seq` and `prev` cannot race.
pub async fn append(
    conn: &mut AnyConnection,
    key: &AuditKey,
    event: &AuditEvent,
) -> Result<AuditRecord, AuditError> {
    let last = sqlx::query("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (seq, prev) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")? + 1,
            row.try_get::<String, _>("mac")?,
        ),
        None => (1, GENESIS.to_string()),
    };
    let at = Utc::now();
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let event_value = serde_json::to_value(event)?;
    let event_json = canonical_json(&event_value);
    let mac = key.mac(&signed_bytes(seq, &at_text, &prev, &event_json));
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, application, outcome, code, reference, event, prev, mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(seq)
    .bind(&at_text)
    .bind(&event.actor)
    .bind(&event.action)
    .bind(&event.application)
    .bind(&event.outcome)
    .bind(&event.code)
    .bind(&event.reference)
    .bind(&event_json)
    .bind(&prev)
    .bind(&mac)
    .execute(&mut *conn)
    .await?;
    Ok(AuditRecord {
        seq,
        at,
        event: event_value,
        prev,
        mac,
    })
}

/// Walk the whole chain in `seq` order, streaming, and report the first broken link;
/// with `checkpoints`, also that the chain still holds each checkpoint's head.
pub async fn verify(
    conn: &mut AnyConnection,
    key: &AuditKey,
    checkpoints: &[checkpoint::Checkpoint],
) -> Result<Verification, AuditError> {
    let mut rows = sqlx::query(
        "SELECT seq, at, actor, action, application, outcome, code, reference, event, prev, mac
         FROM audit_log ORDER BY seq ASC",
    )
    .fetch(&mut *conn);
    let mut pending: Vec<&checkpoint::Checkpoint> = checkpoints.iter().collect();
    pending.sort_by_key(|c| c.seq);
    let mut pending = pending.into_iter().peekable();
    let mut expected_prev = GENESIS.to_string();
    let mut count = 0i64;
    while let Some(row) = rows.try_next().await? {
        let seq: i64 = row.try_get("seq")?;
        let mac: String = row.try_get("mac")?;
        let broken = |reason: &str| Verification {
            ok: false,
            events: count,
            head: expected_prev.clone(),
            broken_at: Some(seq),
            reason: Some(reason.to_string()),
        };
        if let Some(reason) = check_row(&row, key, count + 1, &expected_prev)? {
            return Ok(broken(reason));
        }
        while let Some(c) = pending.next_if(|c| c.seq <= seq) {
            if c.seq == seq && c.head != mac {
                return Ok(broken(
                    "entry differs from the signed checkpoint: the log was rewritten / チェックポイントと不一致（書き換え）",
                ));
            }
        }
        expected_prev = mac;
        count += 1;
    }
    if let Some(c) = pending.next() {
        return Ok(Verification {
            ok: false,
            events: count,
            head: expected_prev,
            broken_at: Some(c.seq),
            reason: Some(format!(
                "truncated: a checkpoint of {} signed entry {} but the log ends at {count} / 切り詰め：チェックポイントの項目がありません",
                c.at.to_rfc3339(),
                c.seq
            )),
        });
    }
    Ok(Verification {
        ok: true,
        events: count,
        head: expected_prev,
        broken_at: None,
        reason: None,
    })
}

/// The first problem of one stored entry, expected at `expected_seq` after
/// `expected_prev`: its place in the chain, its canonical form, its MAC, and every plain
/// column against the signed event.
fn check_row(
    row: &sqlx::any::AnyRow,
    key: &AuditKey,
    expected_seq: i64,
    expected_prev: &str,
) -> Result<Option<&'static str>, AuditError> {
    let seq: i64 = row.try_get("seq")?;
    let at: String = row.try_get("at")?;
    let event: String = row.try_get("event")?;
    let prev: String = row.try_get("prev")?;
    let mac: String = row.try_get("mac")?;
    if seq != expected_seq {
        return Ok(Some(
            "sequence gap: an entry was deleted or renumbered / 連番の欠落（削除または改番）",
        ));
    }
    if prev != expected_prev {
        return Ok(Some(
            "previous-MAC link does not match: entries were reordered or replaced / 前エントリとの連結不一致",
        ));
    }
    // Re-canonicalise: an edit that keeps the JSON meaning but changes bytes is still an edit.
    let parsed = serde_json::from_str::<Value>(&event).ok();
    if parsed.as_ref().map(canonical_json).as_deref() != Some(event.as_str()) {
        return Ok(Some(
            "event is not canonical JSON: the row was edited / イベントが改ざんされています",
        ));
    }
    if !key.check(&signed_bytes(seq, &at, &prev, &event), &mac) {
        return Ok(Some(
            "MAC does not match: the entry was edited / MAC 不一致（改ざん）",
        ));
    }
    let signed = parsed.unwrap_or(Value::Null);
    for column in [
        "actor",
        "action",
        "application",
        "outcome",
        "code",
        "reference",
    ] {
        let stored: Option<String> = row.try_get(column)?;
        if signed[column].as_str() != stored.as_deref() {
            return Ok(Some(
                "a plain column (actor, action, application, outcome, code or reference) differs from the signed event: the row was relabelled / 列の値が署名済みイベントと不一致（改ざん）",
            ));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v: Value = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            AuditKey::from_bytes(&[0u8; 16]),
            Err(AuditError::KeyInvalid(_))
        ));
        assert!(AuditKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(AuditKey::from_hex("zz").is_err());
    }

    #[test]
    fn mac_depends_on_every_field() {
        let key = AuditKey::from_bytes(&[7u8; 32]).unwrap();
        let base = key.mac(&signed_bytes(1, "t", GENESIS, "{}"));
        assert_ne!(base, key.mac(&signed_bytes(2, "t", GENESIS, "{}")));
        assert_ne!(base, key.mac(&signed_bytes(1, "u", GENESIS, "{}")));
        assert_ne!(base, key.mac(&signed_bytes(1, "t", "00", "{}")));
        assert_ne!(base, key.mac(&signed_bytes(1, "t", GENESIS, "{\"a\":1}")));
        let other = AuditKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(!other.check(&signed_bytes(1, "t", GENESIS, "{}"), &base));
    }
}
