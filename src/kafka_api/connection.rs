//! One connection: reads length-prefixed frames (checked against the size limit and the idle
//! timeout), decodes each request, has it answered and writes the response, strictly in
//! request order. With SASL on, only ApiVersions, SaslHandshake and SaslAuthenticate (or a
//! v0 handshake's bare tokens) are served until the client has authenticated; anything else
//! closes the connection, as Kafka does.

use super::sasl::{Refused, SaslSession, Step};
use super::{api_versions, KafkaApi};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind, SaslAuthenticateResponse,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::ResponseError;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest request read before authentication (Kafka's `sasl.server.max.receive.size`).
const MAX_UNAUTHENTICATED_BYTES: usize = 512 << 10;

/// Why a connection was closed.
#[derive(Debug, Error)]
pub(super) enum ConnectionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("request of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("{0:?} before SASL authentication")]
    Unauthenticated(ApiKey),
    #[error("SASL authentication failed: {0}")]
    AuthenticationFailed(String),
}

/// Whether a connection goes on after its answer is written.
enum After {
    Continue,
    /// Close once the answer is out, for this reason.
    Close(ConnectionError),
}

impl KafkaApi {
    /// Serves one connection (TCP, or TLS over it) from `peer` to `local`: read a frame, answer
    /// it, repeat. Answers go out in request order.
    pub(super) async fn connection(
        &self,
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Result<(), ConnectionError> {
        // Without SASL, every connection is as good as authenticated.
        let mut sasl = match self.options.security.sasl {
            Some(_) => SaslSession::Start,
            None => SaslSession::Authenticated {
                user: String::new(),
            },
        };
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
            let limit = match sasl.is_authenticated() {
                true => self.options.max_request_bytes,
                false => MAX_UNAUTHENTICATED_BYTES,
            };
            // A bare SASL token may be shorter than a request header.
            let least = if sasl.expects_raw_token() { 0 } else { 8 };
            if len < least || len as usize > limit {
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
            let frame = frame.split().freeze();
            let after = match sasl.expects_raw_token() {
                true => self.raw_token(&mut sasl, frame, peer, &mut out).await,
                false => self.handle(frame, local, peer, &mut sasl, &mut out).await?,
            };
            stream.write_all(&out).await?;
            if let After::Close(why) = after {
                stream.flush().await?;
                return Err(why);
            }
        }
    }

    /// A bare SASL token after a v0 handshake: answered as a bare length-prefixed token; a
    /// failure gets no answer, only the close.
    async fn raw_token(
        &self,
        sasl: &mut SaslSession,
        token: Bytes,
        peer: SocketAddr,
        out: &mut BytesMut,
    ) -> After {
        match self.authenticate(sasl, token, peer).await {
            Ok(Step::Continue(answer) | Step::Done(answer)) => {
                out.put_i32(answer.len() as i32);
                out.put_slice(&answer);
                After::Continue
            }
            Err(refused) => After::Close(ConnectionError::AuthenticationFailed(refused.reason)),
        }
    }

    /// Feeds one token to the connection's SASL session, off the runtime threads (PLAIN checks
    /// a slow password hash). Logs the outcome: who authenticated, or why not.
    async fn authenticate(
        &self,
        sasl: &mut SaslSession,
        token: Bytes,
        peer: SocketAddr,
    ) -> Result<Step, Refused> {
        let Some(auth) = self.options.security.sasl.clone() else {
            return Err(Refused {
                error: ResponseError::IllegalSaslState,
                reason: "SASL is not enabled on this listener".into(),
            });
        };
        let mut session = std::mem::take(sasl);
        let nonce = nonce();
        let (session, result) = tokio::task::spawn_blocking(move || {
            let result = session.token(&auth, &token, &nonce);
            (session, result)
        })
        .await
        .unwrap_or_else(|e| {
            let reason = format!("authentication task failed: {e}");
            (
                SaslSession::Failed,
                Err(Refused {
                    error: ResponseError::SaslAuthenticationFailed,
                    reason,
                }),
            )
        });
        *sasl = session;
        match &result {
            Ok(Step::Done(_)) => {
                tracing::debug!(%peer, user = sasl.user(), "Kafka client authenticated")
            }
            Ok(Step::Continue(_)) => {}
            Err(refused) => {
                tracing::warn!(%peer, reason = %refused.reason, "Kafka client failed SASL authentication")
            }
        }
        result
    }

    /// SaslHandshake: agrees on the mechanism, or refuses it with the one enabled.
    fn handshake(
        &self,
        sasl: &mut SaslSession,
        mechanism: &str,
        version: i16,
    ) -> (SaslHandshakeResponse, After) {
        let Some(auth) = &self.options.security.sasl else {
            let response = SaslHandshakeResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code());
            return (response, After::Continue);
        };
        let enabled = vec![super::str_bytes(auth.mechanism().name())];
        let response = SaslHandshakeResponse::default().with_mechanisms(enabled);
        match sasl.handshake(auth, mechanism, version) {
            Ok(()) => (response, After::Continue),
            Err(refused) => (
                response.with_error_code(refused.error.code()),
                After::Close(ConnectionError::AuthenticationFailed(refused.reason)),
            ),
        }
    }

    /// Decodes one request and encodes its response (length prefix included) into `out`.
    async fn handle(
        &self,
        mut frame: Bytes,
        local: SocketAddr,
        peer: SocketAddr,
        sasl: &mut SaslSession,
        out: &mut BytesMut,
    ) -> Result<After, ConnectionError> {
        let malformed = |e: anyhow::Error| ConnectionError::Malformed(format!("{e:#}"));
        // Frames are at least 8 bytes, so the api key is there to peek at.
        let api_key = ApiKey::try_from(frame.clone().get_i16())
            .map_err(|_| ConnectionError::Malformed("unknown API key".into()))?;
        let before_sasl = [
            ApiKey::ApiVersions,
            ApiKey::SaslHandshake,
            ApiKey::SaslAuthenticate,
        ];
        if !sasl.is_authenticated() && !before_sasl.contains(&api_key) {
            return Err(ConnectionError::Unauthenticated(api_key));
        }
        let header = kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame)
            .map_err(malformed)?;
        let version = header.request_api_version;
        let response = match api_versions::supported(api_key) {
            Some(range) if range.contains(&version) => {
                let request =
                    RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
                let request = match request {
                    RequestKind::SaslHandshake(r) => {
                        let (response, then) = self.handshake(sasl, &r.mechanism, version);
                        encode(
                            out,
                            &header,
                            version,
                            &ResponseKind::SaslHandshake(response),
                        )?;
                        return Ok(then);
                    }
                    RequestKind::SaslAuthenticate(r) => {
                        let (response, then) = match self
                            .authenticate(sasl, r.auth_bytes, peer)
                            .await
                        {
                            Ok(Step::Continue(answer) | Step::Done(answer)) => (
                                SaslAuthenticateResponse::default().with_auth_bytes(answer.into()),
                                After::Continue,
                            ),
                            Err(refused) => {
                                let message = match refused.error {
                                    ResponseError::SaslAuthenticationFailed => {
                                        "Authentication failed: invalid credentials".to_string()
                                    }
                                    _ => refused.reason.clone(),
                                };
                                let response = SaslAuthenticateResponse::default()
                                    .with_error_code(refused.error.code())
                                    .with_error_message(Some(super::str_bytes(message)));
                                let then = match refused.error {
                                    ResponseError::IllegalSaslState if sasl.is_authenticated() => {
                                        After::Continue
                                    }
                                    _ => After::Close(ConnectionError::AuthenticationFailed(
                                        refused.reason,
                                    )),
                                };
                                (response, then)
                            }
                        };
                        encode(
                            out,
                            &header,
                            version,
                            &ResponseKind::SaslAuthenticate(response),
                        )?;
                        return Ok(then);
                    }
                    request => request,
                };
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
                    return Ok(After::Continue);
                }
                response
            }
            // An ApiVersions the server does not speak gets a v0 answer saying what it does.
            _ if api_key == ApiKey::ApiVersions => {
                encode(
                    out,
                    &header,
                    0,
                    &ResponseKind::ApiVersions(api_versions::unsupported()),
                )?;
                return Ok(After::Continue);
            }
            _ => {
                return Err(ConnectionError::Malformed(format!(
                    "{api_key:?} v{version} is not supported (not offered in ApiVersions)"
                )));
            }
        };
        encode(out, &header, version, &response)?;
        Ok(After::Continue)
    }
}

/// A SCRAM server nonce: 18 random bytes, base64 (printable, no ',').
fn nonce() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 18];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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
