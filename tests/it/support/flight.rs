//! Flight SQL helpers: the real Flight SQL service (`kura::flight::serve`) on a loopback
//! port over any `AppState` (stopped when the guard drops), and arrow-flight's own Flight
//! SQL client connected to it (plain, or TLS with an optional client certificate).

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use kura::http::AppState;
use kura::http::tls::TlsSetup;

pub type Client = FlightSqlServiceClient<Channel>;

/// A running Flight SQL service; stops when dropped.
pub struct FlightServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FlightServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serve Flight SQL over `state` on a free loopback port, with `tls` if given.
pub async fn start(state: AppState, tls: Option<TlsSetup>) -> FlightServer {
    let listener = kura::flight::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let stop = async {
            let _ = rx.await;
        };
        kura::flight::serve(listener, state, tls.as_ref(), stop)
            .await
            .unwrap();
    });
    FlightServer {
        addr,
        stop: Some(tx),
    }
}

/// A plain (h2c) client of `addr`.
pub async fn client(addr: SocketAddr) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// A TLS client of `addr` trusting `config`'s roots (and presenting its certificate).
pub async fn tls_client(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<Client, tonic::transport::Error> {
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(FlightSqlServiceClient::new(channel))
}

/// A client logged in as `user` (handshake, basic authentication) on `application`.
pub async fn login(addr: SocketAddr, user: &str, application: &str) -> Client {
    let mut c = client(addr).await;
    c.handshake(user, super::fixtures::PASSWORD).await.unwrap();
    c.set_header("kura.application", application);
    c
}

/// `GetFlightInfo` of a raw descriptor with `c`'s token and `application` (the client's
/// own method for this is private); the error is the status as the server sent it.
pub async fn flight_info(
    c: &mut Client,
    application: &str,
    descriptor: arrow_flight::FlightDescriptor,
) -> Result<FlightInfo, tonic::Status> {
    let token = c.token().cloned().unwrap_or_default();
    let mut req = tonic::Request::new(descriptor);
    let md = req.metadata_mut();
    md.insert("authorization", format!("Bearer {token}").parse().unwrap());
    md.insert("kura.application", application.parse().unwrap());
    c.inner_mut()
        .get_flight_info(req)
        .await
        .map(|r| r.into_inner())
}

/// Every batch of the first endpoint of `info`.
pub async fn fetch(c: &mut Client, info: &FlightInfo) -> Result<Vec<RecordBatch>, String> {
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = c.do_get(ticket).await.map_err(|e| e.to_string())?;
    stream.try_collect().await.map_err(|e| e.to_string())
}

/// Run `sql` and fetch its answer: the FlightInfo's JSON app metadata and the batches.
pub async fn query(c: &mut Client, sql: &str) -> Result<(Value, Vec<RecordBatch>), String> {
    let info = c
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let meta: Value = serde_json::from_slice(&info.app_metadata).unwrap();
    let batches = fetch(c, &info).await?;
    Ok((meta, batches))
}

/// The stable kura code of a Flight error as the client reports it: the status message
/// starts with `<code>: ` (quoted in the client's rendering of the status).
pub fn code_of(err: &str) -> String {
    let b = err.as_bytes();
    for (i, q) in b.iter().enumerate() {
        if *q != b'"' && *q != b'\'' {
            continue;
        }
        let word: String = err[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if word.len() > 2 && err[i + 1 + word.len()..].starts_with(": ") {
            return word;
        }
    }
    "<none>".into()
}
