//! In-binary TLS (seed 003: access authenticated by client certificate plus ID/password).
//!
//! Certificates are made at test time with rcgen: a CA, a server certificate for
//! 127.0.0.1/localhost, `researcher1` and `researcher2` client certificates from that CA,
//! and a `researcher1` certificate from another CA. The real router is served with the
//! real TLS layer (`kura::http::tls::serve`) on a loopback listener, set up from a
//! `Config` the way `kura serve` does it, and reached with reqwest over rustls (ring).
//! Every refusal is paired with a success on the same server, so a refusal cannot pass
//! just because the server is down.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use kura::config::HttpSettings;
use kura::config::{ClientAuth, Config, TlsConfig};
use kura::http::{AppState, app};

use crate::support::fixtures::store_with_users;
use crate::support::http::{audit_rows, login_over as login, set_cookies, state_over, token_of};
use crate::support::plane::FakePlane;
use crate::support::server::{Demo, kura};

/// A certificate with its key, in PEM and DER.
pub(crate) struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

fn ca(name: &str) -> Issued {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    let key = KeyPair::generate().unwrap();
    Issued {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

fn issue(by: &Issued, sans: &[&str], cn: &str, purpose: ExtendedKeyUsagePurpose) -> Issued {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.extended_key_usages = vec![purpose];
    // Distinct positive serials, so a CRL can name exactly one certificate.
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key = KeyPair::generate().unwrap();
    Issued {
        cert: p.signed_by(&key, &by.cert, &by.key).unwrap(),
        key,
    }
}

/// All certificates of a test, with the server's files written to `dir`.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    pub(crate) ca: Issued,
    pub(crate) researcher1: Issued,
    pub(crate) researcher2: Issued,
    pub(crate) researcher1_other_ca: Issued,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("kura test CA");
        let other = ca_other();
        let server = issue(
            &ca,
            &["localhost", "127.0.0.1"],
            "kura server",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = |by: &Issued, cn| issue(by, &[], cn, ExtendedKeyUsagePurpose::ClientAuth);
        let pki = Pki {
            researcher1: client(&ca, "researcher1"),
            researcher2: client(&ca, "researcher2"),
            researcher1_other_ca: client(&other, "researcher1"),
            dir,
            ca,
        };
        pki.write("ca.pem", &pki.ca.cert.pem());
        pki.write("server.pem", &server.cert.pem());
        pki.write("server.key", &server.key.serialize_pem());
        pki
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn tls_config(
        &self,
        client_auth: Option<ClientAuth>,
        bind: Option<bool>,
    ) -> TlsConfig {
        TlsConfig {
            cert: Some(self.path("server.pem")),
            key: Some(self.path("server.key")),
            client_ca: Some(self.path("ca.pem")),
            client_crl: None,
            client_auth,
            bind_certificate_to_user: bind,
        }
    }

    /// `GET /api/v1/openapi.json` (a public document) over a client presenting `identity`.
    async fn openapi(
        &self,
        base: &str,
        identity: Option<&Issued>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let url = format!("{base}/api/v1/openapi.json");
        self.client(identity).get(url).send().await
    }

    /// The rustls client configuration trusting the test CA, presenting `identity` if given.
    pub(crate) fn client_config(&self, identity: Option<&Issued>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain(), id.private_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        }
    }

    /// A client trusting the test CA, presenting `identity` if given.
    fn client(&self, identity: Option<&Issued>) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(identity))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }
}

fn ca_other() -> Issued {
    ca("some other CA")
}

/// The control plane is what TLS guards here; the data plane refuses everything.
async fn state_with(dir: &Path, settings: HttpSettings) -> AppState {
    let store = store_with_users(dir, &["researcher1", "researcher2"]).await;
    state_over(store, Arc::new(FakePlane::offline()), settings).await
}

/// A running TLS server; stops (gracefully) when dropped.
struct Server {
    base: String,
    addr: std::net::SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serve the real router with TLS set up from `tls` exactly as `kura serve` does.
async fn start(tls: TlsConfig) -> Server {
    let cfg = Config {
        tls,
        ..Config::default()
    };
    let setup = kura::http::tls::load(&cfg.tls)
        .expect("valid TLS configuration")
        .expect("TLS configured");
    let db = tempfile::tempdir().unwrap();
    let state = state_with(db.path(), cfg.http_settings()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = app(state.clone());
    tokio::spawn(async move {
        kura::http::tls::serve(listener, &setup, router, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        base: format!("https://127.0.0.1:{}", addr.port()),
        addr,
        state,
        stop: Some(tx),
        _db: db,
    }
}

/// `GET /me` with a bearer token over `client`'s connection.
async fn me(client: &reqwest::Client, s: &Server, token: &str) -> reqwest::Response {
    let url = format!("{}/api/v1/me", s.base);
    client.get(url).bearer_auth(token).send().await.unwrap()
}

async fn audit(s: &Server, action: &str) -> Vec<Value> {
    audit_rows(&s.state.store, action).await
}

#[tokio::test(flavor = "multi_thread")]
async fn right_certificate_and_password_log_in_with_a_secure_cookie() {
    let pki = Pki::new();
    let s = start(pki.tls_config(None, None)).await;
    let c = pki.client(Some(&pki.researcher1));
    let r = login(&c, &s.base, "researcher1").await.expect("TLS login");
    assert_eq!(r.status(), 200);
    let cookies = set_cookies(r.headers());
    let session = cookies
        .iter()
        .find(|c| c.starts_with("kura_session="))
        .expect("session cookie");
    assert!(
        session.split(';').any(|a| a.trim() == "Secure"),
        "{session}"
    );
    assert!(
        cookies
            .iter()
            .all(|c| c.split(';').any(|a| a.trim() == "Secure")),
        "{cookies:?}"
    );
    let token = token_of(r).await;
    // The bearer token keeps working over the owner's certificate.
    let me = me(&c, &s, &token).await;
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["username"], "researcher1");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_client_certificate_or_another_cas_certificate_is_refused_in_the_handshake() {
    let pki = Pki::new();
    let s = start(pki.tls_config(None, None)).await;
    for (who, identity) in [
        ("no certificate", None),
        ("another CA's certificate", Some(&pki.researcher1_other_ca)),
    ] {
        let r = pki.openapi(&s.base, identity).await;
        assert!(
            r.is_err(),
            "{who} got an answer: {:?}",
            r.map(|r| r.status())
        );
    }
    // Control: the same server answers a client with the right certificate.
    let ok = pki.openapi(&s.base, Some(&pki.researcher1)).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_certificate_with_the_right_password_is_certificate_mismatch() {
    let pki = Pki::new();
    let s = start(pki.tls_config(None, None)).await;
    let as_r2 = pki.client(Some(&pki.researcher2));
    let r = login(&as_r2, &s.base, "researcher1").await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "certificate_mismatch", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("certificate") && msg.contains("証明書"),
        "{msg}"
    );
    let reference = body["error"]["ref"].as_str().unwrap();
    let events = audit(&s, "session.login").await;
    let ev = events
        .iter()
        .find(|e| e["reference"] == reference)
        .unwrap_or_else(|| panic!("refusal not audited: {events:?}"));
    assert_eq!(ev["actor"], "researcher1");
    assert_eq!(ev["code"], "certificate_mismatch");
    assert_eq!(ev["detail"]["certificate_cn"], "researcher2");

    // A token of researcher1 (stolen, say) used over researcher2's connection is refused
    // on every request, not only at login.
    let as_r1 = pki.client(Some(&pki.researcher1));
    let r = login(&as_r1, &s.base, "researcher1").await.unwrap();
    assert_eq!(r.status(), 200);
    let token = token_of(r).await;
    let r = me(&as_r2, &s, &token).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "certificate_mismatch", "{body}");
    let events = audit(&s, "session.certificate").await;
    assert!(
        events
            .iter()
            .any(|e| e["actor"] == "researcher1" && e["code"] == "certificate_mismatch"),
        "{events:?}"
    );
    // And researcher2 with their own certificate is fine.
    let r = login(&as_r2, &s.base, "researcher2").await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_client_auth_with_binding_still_needs_the_certificate_to_log_in() {
    let pki = Pki::new();
    let s = start(pki.tls_config(Some(ClientAuth::Optional), Some(true))).await;
    // Without a certificate the handshake succeeds (public console assets load) ...
    let r = pki.openapi(&s.base, None).await.unwrap();
    assert_eq!(r.status(), 200);
    // ... but login never degrades to password only.
    let r = login(&pki.client(None), &s.base, "researcher1")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "certificate_required", "{body}");
    let r = login(&pki.client(Some(&pki.researcher1)), &s.base, "researcher1")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_the_tls_port_gets_no_api_answer() {
    let pki = Pki::new();
    let s = start(pki.tls_config(None, None)).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(
        b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        !String::from_utf8_lossy(&got).contains("openapi"),
        "API content over plain HTTP"
    );
    // reqwest speaking http:// fails too, while https:// on the same port works.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/api/v1/openapi.json", s.addr))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(plain.is_err(), "{:?}", plain.map(|r| r.status()));
    let ok = pki.openapi(&s.base, Some(&pki.researcher1)).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_client_certificate_is_refused_when_a_crl_is_configured() {
    let pki = Pki::new();
    let revoked_serial = pki.researcher1.cert.params().serial_number.clone().unwrap();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: revoked_serial,
            revocation_time: rcgen::date_time_ymd(2021, 1, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&pki.ca.cert, &pki.ca.key)
    .unwrap();
    pki.write("crl.pem", &crl.pem().unwrap());
    let s = start(TlsConfig {
        client_crl: Some(pki.path("crl.pem")),
        ..pki.tls_config(None, None)
    })
    .await;
    let revoked = login(&pki.client(Some(&pki.researcher1)), &s.base, "researcher1").await;
    match revoked {
        Ok(r) => panic!("revoked certificate got an answer: {}", r.status()),
        // Under TLS 1.3 the client may finish its side of the handshake and send the
        // request before the server's alert arrives; then the request fails with the
        // connection closed instead of the alert text. Either way, no HTTP answer.
        Err(e) => {
            let text = format!("{e:?}");
            assert!(
                text.contains("CertificateRevoked")
                    || (e.is_request() && (text.contains("Canceled") || text.contains("closed"))),
                "{text}"
            );
        }
    }
    let other = login(&pki.client(Some(&pki.researcher2)), &s.base, "researcher2")
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

/// Run `kura serve` and expect it to refuse to start; returns its stderr.
fn serve_refuses(config: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = kura();
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("KURA_TLS_CERT")
        .env_remove("KURA_TLS_KEY")
        .env_remove("KURA_TLS_CLIENT_CA")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(!status.success(), "kura serve started: {stdout}");
            assert!(!stdout.contains("listening"), "{stdout}");
            return String::from_utf8_lossy(&out.stderr).to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kura serve kept running with a broken TLS configuration");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn invalid_tls_configuration_stops_the_server_naming_the_setting() {
    let pki = Pki::new();
    let config = pki.path("kura.toml");
    let toml = |key: &Path| {
        format!(
            "data_dir = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            pki.path("data"),
            pki.path("server.pem"),
            key,
            pki.path("ca.pem"),
        )
    };
    std::fs::write(&config, toml(&pki.path("missing.key"))).unwrap();
    let err = serve_refuses(&config, &[]);
    assert!(
        err.contains("tls.key") && err.contains("missing.key") && err.contains("KURA_TLS_KEY"),
        "{err}"
    );
    // The environment layer overrides a good file with a bad one: still refused, named.
    std::fs::write(&config, toml(&pki.path("server.key"))).unwrap();
    let bad = pki.path("not-a-key.pem");
    std::fs::write(&bad, "hello\n").unwrap();
    let err = serve_refuses(&config, &[("KURA_TLS_KEY", bad.to_str().unwrap())]);
    assert!(
        err.contains("tls.key") && err.contains("no private key"),
        "{err}"
    );
}

/// `kura demo` with the TLS flags: the real binary serves HTTPS with client certificates
/// bound to the demo accounts, and stops on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn demo_binary_serves_https_with_the_tls_flags() {
    let pki = Pki::new();
    let tls_flags = [
        "--tls-cert".into(),
        pki.path("server.pem"),
        "--tls-key".into(),
        pki.path("server.key"),
        "--tls-client-ca".into(),
        pki.path("ca.pem"),
    ];
    let demo = Demo::start(&pki.path("demo"), 2000, &tls_flags);
    let base = format!("https://127.0.0.1:{}", demo.port);
    let result = async {
        assert!(
            demo.printed.iter().any(|l| l.contains(&base)),
            "{:#?}",
            demo.printed
        );
        let ok = login(&pki.client(Some(&pki.researcher1)), &base, "researcher1")
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let mismatch = login(&pki.client(Some(&pki.researcher2)), &base, "researcher1")
            .await
            .unwrap();
        assert_eq!(mismatch.status(), 403);
        assert!(pki.openapi(&base, None).await.is_err());
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    // Graceful stop on SIGTERM (the way systemd stops it).
    let stopped = demo.stop();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    let status = stopped.expect("kura demo did not stop on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn request_timeout_answers_408_in_the_api_error_shape() {
    let db = tempfile::tempdir().unwrap();
    let settings = HttpSettings {
        request_timeout: Duration::from_millis(100),
        ..HttpSettings::default()
    };
    let router = app(state_with(db.path(), settings).await);
    // A body that never ends keeps the handler waiting until the timeout fires.
    let body = Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/session")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), router.oneshot(req))
        .await
        .expect("the timeout layer answered")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).expect("JSON body");
    assert_eq!(v["error"]["code"], "request_timeout", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("request_timeout_secs") && msg.contains("上限"),
        "{msg}"
    );
    assert!(v["error"]["ref"].as_str().unwrap().starts_with("r_"), "{v}");
}
