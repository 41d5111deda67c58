//! One connection: reads length-prefixed frames (checked against the size limit and the idle
//! timeout), decodes each request, has it answered and writes the response, strictly in
//! request order.

use super::{api_versions, KafkaApi};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a connection was closed.
#[derive(Debug, Error)]
pub(super) enum ConnectionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("request of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("idle for {0:?}")]
    Idle(Duration),
}

impl KafkaApi {
    /// Serves one connection: read a frame, answer it, repeat. Answers go out in request order.
    pub(super) async fn connection(&self, mut stream: TcpStream) -> Result<(), ConnectionError> {
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let peer = stream.peer_addr()?;
        let mut frame = BytesMut::new();
        let mut out = BytesMut::new();
        loop {
            let mut len = [0u8; 4];
            match tokio::time::timeout(self.options.idle_timeout, stream.read_exact(&mut len)).await
            {
                Err(_) => return Err(ConnectionError::Idle(self.options.idle_timeout)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            };
            let len = i32::from_be_bytes(len);
            if len < 8 || len as usize > self.options.max_request_bytes {
                return Err(ConnectionError::TooLarge(len.max(0) as usize));
            }
            // The rest of the frame must come within the idle timeout too (a client that sends a
            // length and stalls would otherwise hold its connection for good), and the buffer
            // grows with the bytes that arrive, not with the length a client claims.
            let len = len as usize;
            let body = async {
                let mut body = (&mut stream).take(len as u64);
                while frame.len() < len {
                    frame.reserve((len - frame.len()).min(64 << 10));
                    if body.read_buf(&mut frame).await? == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                    }
                }
                Ok(())
            };
            match tokio::time::timeout(self.options.idle_timeout, body).await {
                Err(_) => return Err(ConnectionError::Idle(self.options.idle_timeout)),
                Ok(r) => r?,
            }
            out.clear();
            self.handle(frame.split().freeze(), local, peer, &mut out)
                .await?;
            stream.write_all(&out).await?;
        }
    }

    /// Decodes one request and encodes its response (length prefix included) into `out`.
    async fn handle(
        &self,
        mut frame: Bytes,
        local: SocketAddr,
        peer: SocketAddr,
        out: &mut BytesMut,
    ) -> Result<(), ConnectionError> {
        let malformed = |e: anyhow::Error| ConnectionError::Malformed(format!("{e:#}"));
        // Frames are at least 8 bytes, so the api key is there to peek at.
        let api_key = ApiKey::try_from(frame.clone().get_i16())
            .map_err(|_| ConnectionError::Malformed("unknown API key".into()))?;
        let header = kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame)
            .map_err(malformed)?;
        let version = header.request_api_version;
        let response = match api_versions::supported(api_key) {
            Some(range) if range.contains(&version) => {
                let request =
                    RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
                // acks=0: the producer expects no answer at all.
                let silent = matches!(&request, RequestKind::Produce(p) if p.acks == 0);
                let client = header.client_id.as_ref().map_or("", |c| c.as_str());
                let Some(response) = self.dispatch(request, version, local, (client, peer)).await
                else {
                    return Err(ConnectionError::Malformed(format!(
                        "{api_key:?} is offered but has no handler"
                    )));
                };
                if silent {
                    return Ok(());
                }
                response
            }
            // An ApiVersions the server does not speak gets a v0 answer saying what it does.
            _ if api_key == ApiKey::ApiVersions => {
                return encode(
                    out,
                    &header,
                    0,
                    &ResponseKind::ApiVersions(api_versions::unsupported()),
                );
            }
            _ => {
                return Err(ConnectionError::Malformed(format!(
                    "{api_key:?} v{version} is not supported (not offered in ApiVersions)"
                )));
            }
        };
        encode(out, &header, version, &response)
    }
}

/// Length prefix, response header, body.
fn encode(
    out: &mut BytesMut,
    header: &RequestHeader,
    version: i16,
    response: &ResponseKind,
) -> Result<(), ConnectionError> {
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| ConnectionError::Malformed("unknown API key".into()))?;
    // ApiVersions responses always use header v0, so old clients can read them.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    let start = out.len();
    out.put_i32(0);
    let failed =
        |e: anyhow::Error| ConnectionError::Malformed(format!("encoding the response: {e:#}"));
    response_header
        .encode(out, header_version)
        .map_err(failed)?;
    response.encode(out, version).map_err(failed)?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}
