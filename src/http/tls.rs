//! Transport security of the HTTP stage: HTTPS served by kura itself with rustls (ring
//! provider), optionally with client certificates verified against the operator's CA
//! (seed 003: access authenticated by client certificate plus ID/password).
//!
//! Guarantees: when any `[tls]` setting is present, kura either serves TLS exactly as
//! configured or does not start — a missing, unreadable or invalid file is a
//! [`TlsError`] naming the setting and the fix, never a fall-back to plain HTTP. A
//! connection whose handshake fails (no client certificate when one is required, a
//! certificate from another CA, plain HTTP on the TLS port) never reaches the router.
//! Every request on a TLS connection carries a [`TlsConnection`] extension with the
//! verified client certificate's identity, set once per connection by this module only,
//! so handlers (and the binding rule in `http::session`) can trust it.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::certificate::ClientIdentity;
use crate::config::{ClientAuth, TlsConfig};

/// How long a client may take to finish the TLS handshake before the connection is
/// dropped (a silent client must not hold a task for ever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors setting up TLS. Each names the `[tls]` setting (and its `KURA_TLS_*` variable)
/// and what to do; any of them stops the server.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "tls.{missing} is not set, but tls.{present} is: set both `cert` and `key` in [tls] (or KURA_TLS_CERT and KURA_TLS_KEY) to serve HTTPS, or remove the [tls] settings to serve plain HTTP behind a TLS proxy. \
         / tls.{missing} が未設定です（tls.{present} は設定済み）。[tls] に cert と key の両方を設定してください"
    )]
    Incomplete {
        missing: &'static str,
        present: &'static str,
    },
    #[error(
        "tls.client_auth = {mode} needs tls.client_ca: set `client_ca` in [tls] (or KURA_TLS_CLIENT_CA) to the PEM bundle of the CA that signs client certificates, or set client_auth = \"off\". \
         / tls.client_auth = {mode} にはクライアント証明書の CA（tls.client_ca）が必要です"
    )]
    NoClientCa { mode: &'static str },
    #[error(
        "tls.client_ca is set but tls.client_auth = \"off\": remove `client_ca`, or set client_auth to \"required\" (or \"optional\"). \
         / tls.client_ca が設定されていますが client_auth が off です"
    )]
    CaButOff,
    #[error(
        "tls.bind_certificate_to_user = true needs client certificates: set tls.client_ca and client_auth = \"required\" (or \"optional\"), or set bind_certificate_to_user = false. \
         / 証明書とアカウントの紐付けにはクライアント証明書の設定が必要です"
    )]
    BindWithoutClientAuth,
    #[error(
        "tls.{setting}: cannot read {path}: {source}. Point `{setting}` in [tls] (or KURA_TLS_{upper}) at a readable PEM file. \
         / tls.{setting} のファイル {path} を読めません。パスと権限を確認してください"
    )]
    Read {
        setting: &'static str,
        upper: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "tls.{setting}: {path} is not valid PEM: {source}. Use a PEM file (-----BEGIN ...-----). \
         / tls.{setting} のファイル {path} は PEM 形式として不正です"
    )]
    Pem {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "tls.{setting}: {path} holds no {what}. Put the {what} in PEM form in this file. \
         / tls.{setting} のファイル {path} に {what} がありません"
    )]
    Empty {
        setting: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error(
        "tls.client_ca: a certificate in {path} cannot be used as a trust anchor: {source}. Use the CA certificate(s) in PEM form. \
         / tls.client_ca の CA 証明書が不正です"
    )]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "tls.client_crl is set but client certificates are off: set tls.client_ca (client_auth \"required\" or \"optional\"), or remove `client_crl`. \
         / tls.client_crl はクライアント証明書を使う場合のみ設定できます"
    )]
    CrlWithoutClientAuth,
    #[error(
        "tls.{setting}: cannot build the client-certificate verifier from {path}: {source}. Use the CA certificate(s) or CRL(s) issued by that CA, in PEM form. \
         / tls.{setting} からクライアント証明書の検証器を作れません"
    )]
    Verifier {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error(
        "tls.cert / tls.key: the certificate chain and private key cannot be used together: {source}. Check that `key` is the private key of the first certificate in `cert`. \
         / サーバー証明書と秘密鍵の組み合わせが不正です"
    )]
    CertKey {
        #[source]
        source: rustls::Error,
    },
}

/// A TLS set-up ready to serve.
#[derive(Clone)]
pub struct TlsSetup {
    pub server_config: Arc<rustls::ServerConfig>,
    pub client_auth: ClientAuth,
    pub bind_certificate_to_user: bool,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("client_auth", &self.client_auth)
            .field("bind_certificate_to_user", &self.bind_certificate_to_user)
            .finish_non_exhaustive()
    }
}

/// What the TLS layer knows about a request's connection; set as a request extension
/// on every request of a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsConnection {
    /// The verified client certificate's identity, if the client sent one.
    pub client: Option<Arc<ClientIdentity>>,
}

fn read(setting: &'static str, upper: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        upper,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(
    setting: &'static str,
    upper: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(setting, upper, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            setting,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            setting,
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", "KEY", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            setting: "key",
            path: path.to_path_buf(),
            what: "private key",
        },
        source => TlsError::Pem {
            setting: "key",
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Check the `[tls]` settings and load every file. `Ok(None)`: no TLS configured (plain
/// HTTP). Any inconsistency or bad file is an error; callers must not start then.
pub fn load(cfg: &TlsConfig) -> Result<Option<TlsSetup>, TlsError> {
    if !cfg.is_configured() {
        return Ok(None);
    }
    let (cert_path, key_path) = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => (c, k),
        (None, Some(_)) => {
            return Err(TlsError::Incomplete {
                missing: "cert",
                present: "key",
            });
        }
        (Some(_), None) => {
            return Err(TlsError::Incomplete {
                missing: "key",
                present: "cert",
            });
        }
        (None, None) => {
            return Err(TlsError::Incomplete {
                missing: "cert",
                present: if cfg.client_ca.is_some() {
                    "client_ca"
                } else {
                    "client_auth"
                },
            });
        }
    };
    let client_auth = cfg.effective_client_auth();
    let bind = cfg.effective_bind();
    match (client_auth, &cfg.client_ca) {
        (ClientAuth::Required, None) => {
            return Err(TlsError::NoClientCa { mode: "required" });
        }
        (ClientAuth::Optional, None) => {
            return Err(TlsError::NoClientCa { mode: "optional" });
        }
        (ClientAuth::Off, Some(_)) => return Err(TlsError::CaButOff),
        _ => {}
    }
    if bind && client_auth == ClientAuth::Off {
        return Err(TlsError::BindWithoutClientAuth);
    }
    if cfg.client_crl.is_some() && client_auth == ClientAuth::Off {
        return Err(TlsError::CrlWithoutClientAuth);
    }
    let chain = certificates("cert", "CERT", cert_path)?;
    let key = private_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::CertKey { source })?;
    let builder = match (&cfg.client_ca, client_auth) {
        (Some(ca_path), ClientAuth::Optional | ClientAuth::Required) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("client_ca", "CLIENT_CA", ca_path)? {
                roots.add(ca).map_err(|source| TlsError::BadCa {
                    path: ca_path.clone(),
                    source,
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if let Some(crl_path) = &cfg.client_crl {
                let bytes = read("client_crl", "CLIENT_CRL", crl_path)?;
                let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|source| TlsError::Pem {
                        setting: "client_crl",
                        path: crl_path.clone(),
                        source,
                    })?;
                if crls.is_empty() {
                    return Err(TlsError::Empty {
                        setting: "client_crl",
                        path: crl_path.clone(),
                        what: "certificate revocation list",
                    });
                }
                // Researchers' certificates are what gets revoked; the CA itself is the
                // operator's trust anchor. A certificate whose CA has no CRL in the file
                // is refused (unknown status fails closed).
                verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
            }
            let verifier = if client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|source| {
                let (setting, path) = match (&source, &cfg.client_crl) {
                    (rustls::server::VerifierBuilderError::InvalidCrl(_), Some(crl)) => {
                        ("client_crl", crl.clone())
                    }
                    _ => ("client_ca", ca_path.clone()),
                };
                TlsError::Verifier {
                    setting,
                    path,
                    source,
                }
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut server_config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::CertKey { source })?;
    // Only HTTP/1.1 is served (hyper http1), so only it is offered.
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsSetup {
        server_config: Arc::new(server_config),
        client_auth,
        bind_certificate_to_user: bind,
    }))
}

/// Serve `router` over TLS on `listener` until `shutdown` resolves, then stop accepting
/// and let in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    setup: &TlsSetup,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(setup.server_config.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let client = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| Arc::new(ClientIdentity::from_der(leaf.as_ref())));
            let conn_info = TlsConnection { client };
            let service = router.map_request(move |req: axum::http::Request<Incoming>| {
                let mut req = req.map(Body::new);
                // Overwrite anything else that might have set it: only this layer may.
                req.extensions_mut().insert(conn_info.clone());
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                req
            });
            // A client that trickles its headers must not hold the connection (and a
            // graceful shutdown) open indefinitely.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let w = |n: &str, s: String| std::fs::write(dir.path().join(n), s).unwrap();
            w("ca.pem", ca_cert.pem());
            w("server.pem", cert.pem());
            w("server.key", key.serialize_pem());
            w(
                "other.key",
                rcgen::KeyPair::generate().unwrap().serialize_pem(),
            );
            w("garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!\n".into());
            w("empty.pem", "nothing here\n".into());
            Files { dir }
        }
        fn p(&self, n: &str) -> Option<PathBuf> {
            Some(self.dir.path().join(n))
        }
        fn cfg(&self) -> TlsConfig {
            TlsConfig {
                cert: self.p("server.pem"),
                key: self.p("server.key"),
                client_ca: self.p("ca.pem"),
                ..TlsConfig::default()
            }
        }
    }

    fn err(cfg: &TlsConfig) -> String {
        load(cfg).unwrap_err().to_string()
    }

    #[test]
    fn no_settings_means_plain_http_and_full_settings_load() {
        assert!(load(&TlsConfig::default()).unwrap().is_none());
        let f = Files::new();
        let s = load(&f.cfg()).unwrap().unwrap();
        assert_eq!(s.client_auth, ClientAuth::Required);
        assert!(s.bind_certificate_to_user);
        let server_only = TlsConfig {
            client_ca: None,
            ..f.cfg()
        };
        let s = load(&server_only).unwrap().unwrap();
        assert_eq!(s.client_auth, ClientAuth::Off);
        assert!(!s.bind_certificate_to_user);
    }

    #[test]
    fn each_bad_file_names_its_setting() {
        let f = Files::new();
        let missing_key = TlsConfig {
            key: f.p("absent.key"),
            ..f.cfg()
        };
        let e = err(&missing_key);
        assert!(e.contains("tls.key") && e.contains("KURA_TLS_KEY"), "{e}");
        let e = err(&TlsConfig {
            cert: f.p("garbage.pem"),
            ..f.cfg()
        });
        assert!(e.contains("tls.cert") && e.contains("PEM"), "{e}");
        let e = err(&TlsConfig {
            client_ca: f.p("empty.pem"),
            ..f.cfg()
        });
        assert!(
            e.contains("tls.client_ca") && e.contains("no certificate"),
            "{e}"
        );
        let e = err(&TlsConfig {
            key: f.p("empty.pem"),
            ..f.cfg()
        });
        assert!(e.contains("tls.key") && e.contains("no private key"), "{e}");
        let e = err(&TlsConfig {
            key: f.p("other.key"),
            ..f.cfg()
        });
        assert!(
            e.contains("tls.key") && e.contains("private key of the first"),
            "{e}"
        );
    }

    #[test]
    fn inconsistent_settings_are_refused_not_weakened() {
        let f = Files::new();
        let e = err(&TlsConfig {
            key: None,
            ..f.cfg()
        });
        assert!(e.contains("tls.key is not set"), "{e}");
        let e = err(&TlsConfig {
            client_ca: None,
            client_auth: Some(ClientAuth::Required),
            ..f.cfg()
        });
        assert!(e.contains("needs tls.client_ca"), "{e}");
        let e = err(&TlsConfig {
            client_auth: Some(ClientAuth::Off),
            ..f.cfg()
        });
        assert!(e.contains("client_auth = \"off\""), "{e}");
        let e = err(&TlsConfig {
            client_ca: None,
            bind_certificate_to_user: Some(true),
            ..f.cfg()
        });
        assert!(e.contains("bind_certificate_to_user"), "{e}");
        let e = err(&TlsConfig {
            client_ca: None,
            client_crl: f.p("ca.pem"),
            ..f.cfg()
        });
        assert!(e.contains("tls.client_crl is set"), "{e}");
        let e = err(&TlsConfig {
            client_crl: f.p("empty.pem"),
            ..f.cfg()
        });
        assert!(
            e.contains("tls.client_crl") && e.contains("revocation list"),
            "{e}"
        );
        // A lone client_ca (no server certificate) must not silently serve plain HTTP.
        let e = err(&TlsConfig {
            client_ca: f.p("ca.pem"),
            ..TlsConfig::default()
        });
        assert!(e.contains("tls.cert is not set"), "{e}");
        assert!(Path::new(&f.p("ca.pem").unwrap()).exists());
    }
}
