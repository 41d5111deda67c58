//! SASL on the Kafka listener (`log.embedded.kafka_auth`): PLAIN and SCRAM-SHA-256/512 over a
//! users file, as Kafka's SASL listeners do it. [`SaslSession`] is one connection's
//! authentication, a pure state machine; `connection` feeds it SaslHandshake, SaslAuthenticate
//! and (after a v0 handshake) raw tokens, and serves nothing else until it says authenticated.
//!
//! - SaslHandshake: the client's mechanism must be the configured one, else
//!   UNSUPPORTED_SASL_MECHANISM with the one enabled. v1 and later: tokens follow in
//!   SaslAuthenticate requests; v0: as raw length-prefixed frames (older clients).
//! - A failed authentication is answered with SASL_AUTHENTICATION_FAILED (raw tokens: no answer)
//!   and the connection closed, as Kafka does; the reason is logged, the client only learns
//!   that it failed.
//! - Sessions do not expire (`session_lifetime_ms` 0: no re-authentication).

use crate::config::{KafkaAuthConfig, SaslMechanism};
use crate::security::scram::{ScramMechanism, ScramServer};
use crate::security::users::Users;
use kafka_protocol::ResponseError;
use std::fmt;

/// The configured mechanism and its users.
pub struct Authenticator {
    mechanism: SaslMechanism,
    users: Users,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Authenticator({}, {} users)",
            self.mechanism.name(),
            self.users.len()
        )
    }
}

impl Authenticator {
    /// Reads the users file; an error names the file, its lines and the fix.
    pub fn load(config: &KafkaAuthConfig) -> Result<Authenticator, String> {
        let path = config.users_file.display();
        let users = Users::load(&config.users_file)
            .map_err(|errors| format!("{path}: {}", errors.join("; ")))?;
        Authenticator::new(config.mechanism, users).map_err(|e| format!("{path}: {e}"))
    }

    /// Refuses users the mechanism cannot serve: SCRAM needs each user's SCRAM credential.
    pub fn new(mechanism: SaslMechanism, users: Users) -> Result<Authenticator, String> {
        if users.is_empty() {
            return Err("no users in it; add lines from `tributary passwd USER`".into());
        }
        if let Some(scram) = scram(mechanism) {
            let unusable = users.without_scram(scram);
            if !unusable.is_empty() {
                return Err(format!(
                    "{} needs {0} credentials, and these users have none: {}; make their lines with `tributary passwd USER --mechanism {0}`",
                    mechanism.name(),
                    unusable.join(", ")
                ));
            }
        }
        Ok(Authenticator { mechanism, users })
    }

    pub fn mechanism(&self) -> SaslMechanism {
        self.mechanism
    }
}

fn scram(mechanism: SaslMechanism) -> Option<ScramMechanism> {
    match mechanism {
        SaslMechanism::Plain => None,
        SaslMechanism::ScramSha256 => Some(ScramMechanism::Sha256),
        SaslMechanism::ScramSha512 => Some(ScramMechanism::Sha512),
    }
}

/// One connection's authentication.
#[derive(Debug, Default)]
pub enum SaslSession {
    /// Waiting for SaslHandshake.
    #[default]
    Start,
    /// The mechanism agreed; waiting for the first token. `raw`: tokens come as bare frames
    /// (SaslHandshake v0), not in SaslAuthenticate.
    Handshaken {
        raw: bool,
    },
    /// SCRAM's first round done; waiting for the client's final message.
    Scram {
        server: ScramServer,
        raw: bool,
    },
    Authenticated {
        user: String,
    },
    /// Authentication failed; the connection closes.
    Failed,
}

/// What one token led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The server's answer; another token follows.
    Continue(Vec<u8>),
    /// Authenticated, with the server's last answer.
    Done(Vec<u8>),
}

/// Why a SASL request is refused: the error code for the client, and the reason for the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub error: ResponseError,
    pub reason: String,
}

impl Refused {
    fn illegal(reason: &str) -> Refused {
        Refused {
            error: ResponseError::IllegalSaslState,
            reason: reason.into(),
        }
    }

    fn failed(reason: impl fmt::Display) -> Refused {
        Refused {
            error: ResponseError::SaslAuthenticationFailed,
            reason: reason.to_string(),
        }
    }
}

impl SaslSession {
    pub fn is_authenticated(&self) -> bool {
        matches!(self, SaslSession::Authenticated { .. })
    }

    /// The authenticated user.
    pub fn user(&self) -> Option<&str> {
        match self {
            SaslSession::Authenticated { user } => Some(user),
            _ => None,
        }
    }

    /// Whether the next frame is a bare token (after a v0 handshake), not a request.
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self,
            SaslSession::Handshaken { raw: true } | SaslSession::Scram { raw: true, .. }
        )
    }

    /// SaslHandshake for `mechanism`, at `version`.
    pub fn handshake(
        &mut self,
        auth: &Authenticator,
        mechanism: &str,
        version: i16,
    ) -> Result<(), Refused> {
        if !matches!(self, SaslSession::Start) {
            return Err(Refused::illegal("a second SaslHandshake"));
        }
        if mechanism != auth.mechanism.name() {
            return Err(Refused {
                error: ResponseError::UnsupportedSaslMechanism,
                reason: format!(
                    "the client asked for {mechanism:?}; this listener takes {}",
                    auth.mechanism.name()
                ),
            });
        }
        *self = SaslSession::Handshaken { raw: version == 0 };
        Ok(())
    }

    /// One token from the client (SaslAuthenticate's bytes, or a bare frame after a v0
    /// handshake). `server_nonce`: fresh random printable text without ',' for SCRAM. Slow for
    /// PLAIN (the password hash): call it off the runtime threads. After a refusal the session
    /// is `Failed`.
    pub fn token(
        &mut self,
        auth: &Authenticator,
        token: &[u8],
        server_nonce: &str,
    ) -> Result<Step, Refused> {
        match std::mem::replace(self, SaslSession::Failed) {
            SaslSession::Handshaken { raw } => match scram(auth.mechanism) {
                None => plain(auth, token).map(|user| {
                    *self = SaslSession::Authenticated { user };
                    Step::Done(Vec::new())
                }),
                Some(m) => ScramServer::start(m, token, |u| auth.users.scram(u, m), server_nonce)
                    .map(|(server, first)| {
                        *self = SaslSession::Scram { server, raw };
                        Step::Continue(first)
                    })
                    .map_err(Refused::failed),
            },
            SaslSession::Scram { server, .. } => server
                .finish(token)
                .map(|(user, last)| {
                    *self = SaslSession::Authenticated { user };
                    Step::Done(last)
                })
                .map_err(Refused::failed),
            SaslSession::Start => Err(Refused::illegal("SaslAuthenticate before SaslHandshake")),
            SaslSession::Authenticated { user } => {
                *self = SaslSession::Authenticated { user };
                Err(Refused::illegal("already authenticated"))
            }
            SaslSession::Failed => Err(Refused::illegal("authentication failed before")),
        }
    }
}

/// PLAIN (RFC 4616): `[authzid] NUL user NUL password`; the authenticated user.
fn plain(auth: &Authenticator, token: &[u8]) -> Result<String, Refused> {
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::failed("malformed PLAIN token"));
    };
    let user = std::str::from_utf8(user).map_err(|_| Refused::failed("user name not UTF-8"))?;
    if !(authzid.is_empty() || authzid == user.as_bytes()) {
        return Err(Refused::failed("an authorization id other than the user"));
    }
    match auth.users.verify(user, password) {
        true => Ok(user.to_string()),
        false => Err(Refused::failed(format_args!(
            "wrong password or unknown user {user:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::ScramCredential;
    use crate::security::users::hash_password;

    fn authenticator(mechanism: SaslMechanism, lines: &str) -> Authenticator {
        Authenticator::new(mechanism, Users::parse(lines).unwrap()).unwrap()
    }

    #[test]
    fn plain_right_wrong_and_out_of_turn() {
        let auth = authenticator(
            SaslMechanism::Plain,
            &format!("alice:{}\n", hash_password(b"pw").unwrap()),
        );
        let mut s = SaslSession::default();
        let early = s.token(&auth, b"\0alice\0pw", "n").unwrap_err();
        assert_eq!(early.error, ResponseError::IllegalSaslState);

        let mut s = SaslSession::default();
        let refused = s.handshake(&auth, "SCRAM-SHA-256", 1).unwrap_err();
        assert_eq!(refused.error, ResponseError::UnsupportedSaslMechanism);
        s.handshake(&auth, "PLAIN", 1).unwrap();
        assert!(!s.expects_raw_token());
        assert_eq!(s.token(&auth, b"\0alice\0pw", "n"), Ok(Step::Done(vec![])));
        assert_eq!(s.user(), Some("alice"));
        assert_eq!(
            s.token(&auth, b"\0alice\0pw", "n").unwrap_err().error,
            ResponseError::IllegalSaslState
        );
        assert!(s.is_authenticated(), "a stray token does not undo it");

        for bad in [
            &b"\0alice\0nope"[..],
            b"\0bob\0pw",
            b"alice\0pw",
            b"eve\0alice\0pw",
        ] {
            let mut s = SaslSession::default();
            s.handshake(&auth, "PLAIN", 0).unwrap();
            assert!(s.expects_raw_token());
            let refused = s.token(&auth, bad, "n").unwrap_err();
            assert_eq!(
                refused.error,
                ResponseError::SaslAuthenticationFailed,
                "{bad:?}"
            );
            assert!(!s.is_authenticated());
            assert!(!s.expects_raw_token());
        }
    }

    #[test]
    fn scram_needs_every_user_to_have_a_credential() {
        let scram = ScramCredential::generate(ScramMechanism::Sha256, b"pw").unwrap();
        let argon = hash_password(b"pw").unwrap();
        let users = Users::parse(&format!("a:{scram}\nb:{argon}\n")).unwrap();
        let e = Authenticator::new(SaslMechanism::ScramSha256, users.clone()).unwrap_err();
        assert!(e.contains("users have none: b;"), "{e}");
        assert!(e.contains("--mechanism SCRAM-SHA-256"), "{e}");
        Authenticator::new(SaslMechanism::Plain, users).unwrap();
    }

    #[test]
    fn scram_two_rounds() {
        let credential = ScramCredential::generate(ScramMechanism::Sha512, b"pw").unwrap();
        let auth = authenticator(SaslMechanism::ScramSha512, &format!("u:{credential}\n"));
        let mut s = SaslSession::default();
        s.handshake(&auth, "SCRAM-SHA-512", 1).unwrap();
        let Ok(Step::Continue(first)) = s.token(&auth, b"n,,n=u,r=c", "s") else {
            panic!("{s:?}");
        };
        assert!(String::from_utf8(first).unwrap().starts_with("r=cs,s="));
        let refused = s.token(&auth, b"c=biws,r=cs,p=AAAA", "s").unwrap_err();
        assert_eq!(refused.error, ResponseError::SaslAuthenticationFailed);
        assert!(matches!(s, SaslSession::Failed));

        let mut s = SaslSession::default();
        s.handshake(&auth, "SCRAM-SHA-512", 1).unwrap();
        let unknown = s.token(&auth, b"n,,n=nobody,r=c", "s").unwrap_err();
        assert_eq!(unknown.error, ResponseError::SaslAuthenticationFailed);
    }
}
