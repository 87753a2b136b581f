//! Audit alert notification: a background task that POSTs each new alert as JSON to the
//! configured webhook (`alert_webhook_url`, plain `http://` to a relay on loopback or the
//! internal network).
//!
//! Guarantees: notification never blocks or fails an audit write — it runs after commit,
//! from the `alerts` table, on its own task; an alert is marked delivered (`notified_at`)
//! only after a 2xx answer, so a failing receiver gets it again on the next round
//! (at-least-once); a receiver that hangs is given up after a timeout.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Uri};
use hyper_util::rt::TokioIo;

use crate::store::Store;

/// Why a webhook URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "alert_webhook_url `{0}` is not usable: give http://host:port/path (for HTTPS, relay through a local proxy) / alert_webhook_url が不正です"
)]
pub struct WebhookUrlError(String);

/// A parsed webhook target.
#[derive(Debug, Clone)]
pub struct Webhook {
    uri: Uri,
    authority: String,
}

impl Webhook {
    pub fn parse(url: &str) -> Result<Self, WebhookUrlError> {
        let uri: Uri = url.parse().map_err(|_| WebhookUrlError(url.into()))?;
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .filter(|_| uri.scheme_str() == Some("http"))
            .ok_or_else(|| WebhookUrlError(url.into()))?;
        let authority = if authority.contains(':') {
            authority
        } else {
            format!("{authority}:80")
        };
        Ok(Self { uri, authority })
    }

    /// POST `body` (JSON); Ok when the receiver answered 2xx.
    pub async fn post(&self, body: String) -> Result<(), String> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::post(path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered {}", resp.status()))
        }
    }
}

/// Deliver undelivered alerts every `every` until the task is aborted.
pub fn spawn(store: Store, hook: Webhook, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = deliver(&store, &hook).await {
                tracing::warn!(error = %e, "alert webhook delivery failed; will retry");
            }
        }
    })
}

/// One round: post every undelivered alert, oldest first; stop at the first failure.
pub async fn deliver(store: &Store, hook: &Webhook) -> Result<usize, String> {
    let pending = store
        .undelivered_alerts(50)
        .await
        .map_err(|e| e.to_string())?;
    let mut sent = 0;
    for alert in pending {
        let body = serde_json::to_string(&alert).map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(10), hook.post(body))
            .await
            .map_err(|_| "receiver timed out".to_string())??;
        store
            .mark_alert_delivered(&alert.id)
            .await
            .map_err(|e| e.to_string())?;
        sent += 1;
    }
    Ok(sent)
}
