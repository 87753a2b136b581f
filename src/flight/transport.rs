//! Flight SQL stage, transport: the connections the gRPC server accepts, plain or TLS with
//! the HTTP API's own rustls set-up (`http::tls`: the same certificate, client CA, CRLs and
//! client-certificate mode), offering HTTP/2 (ALPN `h2`) instead of HTTP/1.1.
//!
//! Guarantees: with TLS configured, only connections whose handshake succeeded reach the
//! service — no client certificate when one is required, a certificate from another CA, a
//! revoked one, or plain gRPC on the TLS port never get a response; a client has
//! [`HANDSHAKE_TIMEOUT`] to finish the handshake. Every connection carries a [`PeerInfo`]
//! with the verified client certificate's identity, set here once per connection and
//! nowhere else, so the certificate binding (`auth::login`) can trust it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::auth::certificate::ClientIdentity;
use crate::auth::login::Peer;
use crate::http::tls::TlsSetup;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the transport knows about a connection; a request extension of every call.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub tls: bool,
    pub client: Option<Arc<ClientIdentity>>,
    /// The client's address (the per-address login rate, `auth::rate`).
    pub remote: Option<std::net::SocketAddr>,
}

impl PeerInfo {
    /// The connection as the authentication stage sees it.
    pub fn peer(&self) -> Peer<'_> {
        Peer {
            tls: self.tls,
            client: self.client.as_deref(),
        }
    }
}

/// One accepted connection.
pub struct FlightConn {
    io: Io,
    info: PeerInfo,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for FlightConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for FlightConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for FlightConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS acceptor for gRPC: the HTTP set-up with ALPN `h2`.
fn acceptor(setup: &TlsSetup) -> TlsAcceptor {
    let mut config = (*setup.server_config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// The stream of connections accepted on `listener`: TLS handshakes run in their own
/// tasks (a slow client holds nobody else up); failed ones are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<&TlsSetup>,
) -> impl Stream<Item = Result<FlightConn, io::Error>> + Send + 'static {
    let acceptor = tls.map(acceptor);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<FlightConn, io::Error>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a Flight SQL connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = acceptor.clone() else {
                let conn = FlightConn {
                    io: Io::Plain(tcp),
                    info: PeerInfo {
                        remote: Some(remote),
                        ..PeerInfo::default()
                    },
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(tls_conn(stream, remote))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%remote, error = %e, "Flight SQL TLS handshake refused")
                    }
                    Err(_) => tracing::info!(%remote, "Flight SQL TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// A finished TLS handshake with the verified client certificate's identity.
fn tls_conn(stream: TlsStream<TcpStream>, remote: std::net::SocketAddr) -> FlightConn {
    let client = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| Arc::new(ClientIdentity::from_der(leaf.as_ref())));
    FlightConn {
        io: Io::Tls(Box::new(stream)),
        info: PeerInfo {
            tls: true,
            client,
            remote: Some(remote),
        },
    }
}
