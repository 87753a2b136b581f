//! Web console assets (stage: HTTP / console). The console is a single-page app built from
//! `src/console/web` by `build.rs` (Vite) and embedded into the binary with rust-embed, so the
//! enclave serves every byte of it itself and nothing is fetched from outside.
//!
//! Guarantees: only GET and HEAD are answered; every response carries the strict
//! `Content-Security-Policy: default-src 'self'` (the bundle has no inline script or style, see
//! the tests) and `X-Content-Type-Options: nosniff`; content types come from a fixed table, never
//! from sniffing; hashed assets under `/assets/` are cached for a year, everything else is
//! revalidated (`no-cache` + ETag) so a new binary's console is picked up at once. Unknown paths
//! without a file extension fall back to `index.html` (client-side routes); unknown files are 404.
//! The console never handles `/api/…`: the API router answers those before this fallback.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// The built console (`src/console/web/dist`, produced by `build.rs`).
#[derive(RustEmbed)]
#[folder = "src/console/web/dist/"]
struct Assets;

/// The Content-Security-Policy sent with every console response. It matches the API's policy;
/// both are set so that the console stays strict even if mounted elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; object-src 'none'";

/// A router that serves the console for every path it is given. Mount it as the fallback of the
/// application router (`Router::fallback_service(console::router())` or
/// `.fallback(console::serve)`), after `/api/v1` has been nested.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().fallback(serve)
}

/// Serve one console request (the handler behind [`router`]).
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "The console only answers GET. / コンソールは GET のみ受け付けます。",
        );
    }
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") || path == "api" {
        // The API router owns /api; reaching here means the endpoint does not exist.
        return plain(
            StatusCode::NOT_FOUND,
            "No such API endpoint; see /api/v1/openapi.json. / 該当する API はありません。",
        );
    }
    let (name, file) = match Assets::get(path).filter(|_| !path.is_empty()) {
        Some(file) => (path.to_string(), file),
        None if looks_like_file(path) => {
            return plain(StatusCode::NOT_FOUND, "Not found. / 見つかりません。");
        }
        None => match Assets::get("index.html") {
            Some(file) => ("index.html".to_string(), file),
            None => {
                // Only possible if the build produced no index.html; build.rs fails first.
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The console was not built; run `npm run build` in src/console/web. / コンソールが未ビルドです。",
                );
            }
        },
    };

    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };

    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&name)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control(&name)),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    security_headers(h);
    response
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    let mut r = (status, message).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(r.headers_mut());
    r
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A last path segment with an extension is a file request; a miss is a 404, not the app.
fn looks_like_file(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
}

/// Vite names everything under `assets/` by content hash, so those never change; anything
/// else (index.html, favicon) must be revalidated.
fn cache_control(name: &str) -> &'static str {
    if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Names of all embedded files (used by tests and diagnostics).
pub fn asset_names() -> Vec<String> {
    Assets::iter().map(|n| n.into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        router::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 10 << 20).await.unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn hdr(r: &Response, name: header::HeaderName) -> &str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn main_script() -> String {
        asset_names()
            .into_iter()
            .find(|n| n.starts_with("assets/") && n.ends_with(".js"))
            .expect("the build produced a JavaScript bundle")
    }

    #[tokio::test]
    async fn root_serves_the_app_with_strict_csp_and_revalidation() {
        let r = get("/").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hdr(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(hdr(&r, header::CACHE_CONTROL), "no-cache");
        assert!(hdr(&r, header::CONTENT_SECURITY_POLICY).starts_with("default-src 'self'"));
        assert_eq!(hdr(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert!(body(r).await.contains("<div id=\"app\">"));
    }

    #[tokio::test]
    async fn client_routes_fall_back_to_index_but_missing_files_are_404() {
        let r = get("/review/A-2026-0001").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(body(r).await.contains("<div id=\"app\">"));
        let r = get("/assets/does-not-exist.js").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // /api is never answered with the app: a typo in an API path must not look like success.
        let r = get("/api/v1/nope").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn hashed_assets_are_immutable_with_correct_type() {
        let js = main_script();
        let r = get(&format!("/{js}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            hdr(&r, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            hdr(&r, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        let css = asset_names()
            .into_iter()
            .find(|n| n.ends_with(".css"))
            .expect("a stylesheet");
        let r = get(&format!("/{css}")).await;
        assert_eq!(hdr(&r, header::CONTENT_TYPE), "text/css; charset=utf-8");
    }

    #[tokio::test]
    async fn etag_revalidation_returns_304() {
        let r = get("/").await;
        let etag = hdr(&r, header::ETAG).to_string();
        assert!(etag.starts_with('"') && etag.len() > 10);
        let r = router::<()>()
            .oneshot(
                Request::get("/")
                    .header(header::IF_NONE_MATCH, &etag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(body(r).await.is_empty());
    }

    #[tokio::test]
    async fn state_changing_methods_are_refused() {
        let r = router::<()>()
            .oneshot(Request::post("/").body(Body::from("x")).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    /// CSP `default-src 'self'` blocks inline scripts and styles and anything from another
    /// origin; the built page must not rely on any of them or the console would not start.
    #[tokio::test]
    async fn index_has_no_inline_script_style_or_foreign_origin() {
        let html = body(get("/").await).await;
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(
                open.contains("src=\"/"),
                "inline or foreign script: <script{open}>"
            );
        }
        assert!(
            !html.contains("<style"),
            "inline <style> would be blocked by CSP"
        );
        assert!(
            !html.contains("style=\""),
            "inline style attribute would be blocked by CSP"
        );
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "foreign origin in index.html"
        );
        assert!(
            !html.contains("data:"),
            "data: URLs are outside default-src 'self'"
        );
    }
}
