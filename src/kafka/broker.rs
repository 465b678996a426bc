//! Our own connections to a broker, for the requests rskafka's client does not make
//! (a topic with settings, a fetch read without copies), over rskafka's protocol types
//! and messenger (its `unstable-fuzzing` feature makes them public; rskafka is pinned to
//! the version this was written against). Connected as the client connects: TLS, SASL.
//!
//! It never waits without a bound of the caller's: connecting is bounded by the caller.

use std::sync::Arc;

use rskafka::messenger::Messenger;
use tokio::io::{AsyncRead, AsyncWrite, BufStream};
use tokio::net::TcpStream;

use super::KafkaSettings;

/// The stream under a messenger: TCP, or TLS over TCP.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A connection to one broker, ready for requests.
pub(crate) type Broker = Messenger<BufStream<Box<dyn Duplex>>>;

/// The largest answer taken from a broker (rskafka's client takes the same).
const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;

/// Connect to `server` (`host:port`) as the client does (TLS, SASL), ready for requests.
pub(crate) async fn broker(settings: &KafkaSettings, server: &str) -> Result<Broker, String> {
    let tcp = TcpStream::connect(server)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    // A request is one write: Nagle would only hold it back behind an unacknowledged one.
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Duplex> = match settings.tls_config().map_err(|e| e.0)? {
        None => Box::new(tcp),
        Some(config) => {
            let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
            let name = rustls_pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("{host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("{server}: TLS: {e}"))?;
            Box::new(tls)
        }
    };
    // Buffered, as rskafka's own connections are: a frame's length and its body in one read.
    let stream = BufStream::new(stream);
    let mut messenger = Messenger::new(stream, MAX_MESSAGE_BYTES, Arc::from("checksite"));
    messenger
        .sync_versions()
        .await
        .map_err(|e| format!("{server}: API versions: {e}"))?;
    if let Some(sasl) = super::sasl_config(settings) {
        messenger
            .do_sasl(sasl)
            .await
            .map_err(|e| format!("{server}: SASL: {e}"))?;
    }
    Ok(messenger)
}
