//! SCRAM (RFC 5802, with SHA-256 and SHA-512 as RFC 7677 and Kafka's KIP-84 use them), the
//! server's side: the stored credential (never the password) and the two-message exchange as a
//! pure state machine. The server nonce comes from outside, so the exchange is testable with
//! the RFC's vectors.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use std::fmt;
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

/// The two SCRAM mechanisms Kafka clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// The SASL name, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// Iterations `tributary passwd` uses: Kafka's minimum and its tools' default.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// What the server keeps of a password: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
/// (RFC 5803's form, base64), from which the password cannot be recovered.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    pub iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramCredential({})", self.mechanism.name())
    }
}

impl ScramCredential {
    /// The credential of `password` with `salt`.
    pub fn new(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let salted = salted_password(mechanism, password, salt, iterations);
        let client_key = sign(mechanism, &salted, b"Client Key");
        ScramCredential {
            mechanism,
            iterations,
            salt: salt.to_vec(),
            stored_key: digest::digest(mechanism.digest(), &client_key)
                .as_ref()
                .to_vec(),
            server_key: sign(mechanism, &salted, b"Server Key"),
        }
    }

    /// A credential with a fresh random salt.
    pub fn generate(mechanism: ScramMechanism, password: &[u8]) -> Result<ScramCredential, String> {
        let mut salt = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| "no randomness for a salt".to_string())?;
        Ok(ScramCredential::new(
            mechanism,
            password,
            &salt,
            DEFAULT_ITERATIONS,
        ))
    }

    /// Reads the RFC 5803 form.
    pub fn parse(text: &str) -> Result<ScramCredential, String> {
        let bad = || {
            "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (base64)"
                .to_string()
        };
        let mut parts = text.split('$');
        let (Some(name), Some(params), Some(keys), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let mechanism = ScramMechanism::from_name(name).ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&i| i >= DEFAULT_ITERATIONS)
            .ok_or_else(|| format!("iterations must be a number >= {DEFAULT_ITERATIONS}"))?;
        let decode = |s: &str| B64.decode(s).map_err(|_| bad());
        let (salt, stored_key, server_key) = (decode(salt)?, decode(stored)?, decode(server)?);
        if salt.is_empty()
            || stored_key.len() != mechanism.len()
            || server_key.len() != mechanism.len()
        {
            return Err(format!(
                "{name}: keys must be {} bytes and the salt not empty",
                mechanism.len()
            ));
        }
        Ok(ScramCredential {
            mechanism,
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Whether `password` is the one this credential was made from (for SASL PLAIN).
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let other = ScramCredential::new(self.mechanism, password, &self.salt, self.iterations);
        bool::from(other.stored_key.ct_eq(&self.stored_key))
    }
}

impl fmt::Display for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}${}:{}${}:{}",
            self.mechanism.name(),
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }
}

fn salted_password(mechanism: ScramMechanism, password: &[u8], salt: &[u8], i: u32) -> Vec<u8> {
    let mut out = vec![0u8; mechanism.len()];
    let iterations = NonZeroU32::new(i.max(1)).expect("at least one iteration");
    pbkdf2::derive(mechanism.pbkdf2(), iterations, salt, password, &mut out);
    out
}

fn sign(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(mechanism.hmac(), key);
    hmac::sign(&key, data).as_ref().to_vec()
}

/// Why an exchange failed. The client only learns that it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A message that is not what SCRAM sends at this step.
    Malformed(&'static str),
    UnknownUser,
    /// The proof does not match the stored key: a wrong password.
    BadProof,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            ScramError::UnknownUser => write!(f, "unknown user"),
            ScramError::BadProof => write!(f, "wrong password"),
        }
    }
}

/// The server after the client's first message, waiting for its final one.
#[derive(Debug)]
pub struct ScramServer {
    user: String,
    credential: ScramCredential,
    /// The client's nonce and ours.
    nonce: String,
    /// client-first-bare "," server-first: the start of the AuthMessage.
    transcript: String,
    gs2_header: String,
}

/// The user names in `client-first`: `n=<user>` with `=2C` and `=3D` escapes.
fn sasl_name(text: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramServer {
    /// Takes the client's first message (`n,,n=user,r=nonce`); `lookup` finds the user's
    /// credential, `server_nonce` is fresh random printable text. Returns the server's first
    /// message with the server waiting for the final one.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        server_nonce: &str,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: a channel-binding flag and an optional authzid, each followed by ','.
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !(flag == "n" || flag == "y") {
            return Err(ScramError::Malformed("channel binding is not supported"));
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !(authzid.is_empty() || authzid.starts_with("a=")) {
            return Err(ScramError::Malformed("bad authzid"));
        }
        let gs2_header = text[..flag.len() + authzid.len() + 2].to_string();
        let mut fields = bare.split(',');
        let user = match fields.next() {
            Some(f) if f.starts_with("n=") => sasl_name(&f[2..])?,
            _ => return Err(ScramError::Malformed("no user name")),
        };
        let client_nonce = match fields.next() {
            Some(f) if f.starts_with("r=") && f.len() > 2 => &f[2..],
            _ => return Err(ScramError::Malformed("no client nonce")),
        };
        // Later fields are extensions (Kafka's `tokenauth`): delegation tokens are not
        // supported, so a token is looked up as a user and fails as one.
        let authzid_user = authzid.strip_prefix("a=").map(sasl_name).transpose()?;
        if authzid_user.is_some_and(|a| a != user) {
            return Err(ScramError::Malformed(
                "an authorization id other than the user",
            ));
        }
        let credential = lookup(&user)
            .filter(|c| c.mechanism == mechanism)
            .ok_or(ScramError::UnknownUser)?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let transcript = format!("{bare},{server_first}");
        let server = ScramServer {
            user,
            credential,
            nonce,
            transcript,
            gs2_header,
        };
        Ok((server, server_first.into_bytes()))
    }

    /// Takes the client's final message (`c=...,r=...,p=...`), checks the proof, and returns the
    /// authenticated user with the server's final message (`v=<signature>`).
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        match fields.next().and_then(|c| c.strip_prefix("c=")) {
            Some(binding) if B64.decode(binding).ok() == Some(self.gs2_header.clone().into()) => {}
            _ => return Err(ScramError::Malformed("channel binding does not match")),
        }
        // Kafka's broker checks that the nonce ends with the one it sent (librdkafka sends its
        // own nonce before it); the proof covers the nonce as sent either way.
        match fields.next().and_then(|r| r.strip_prefix("r=")) {
            Some(nonce) if nonce.ends_with(&self.nonce) => {}
            _ => return Err(ScramError::Malformed("nonce does not match")),
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let mechanism = self.credential.mechanism;
        if proof.len() != mechanism.len() {
            return Err(ScramError::BadProof);
        }
        let auth_message = format!("{},{without_proof}", self.transcript);
        let client_signature = sign(
            mechanism,
            &self.credential.stored_key,
            auth_message.as_bytes(),
        );
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored = digest::digest(mechanism.digest(), &client_key);
        if !bool::from(stored.as_ref().ct_eq(&self.credential.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = sign(
            mechanism,
            &self.credential.server_key,
            auth_message.as_bytes(),
        );
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil".
    #[test]
    fn rfc7677_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::new(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let (server, first) = ScramServer::start(
            ScramMechanism::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |u| (u == "user").then(|| credential.clone()),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (user, last) = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// The client's side, as Kafka clients compute it.
    fn client_final(
        m: ScramMechanism,
        password: &[u8],
        first_bare: &str,
        server_first: &str,
    ) -> String {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = &fields[0][2..];
        let salt = B64.decode(&fields[1][2..]).unwrap();
        let i: u32 = fields[2][2..].parse().unwrap();
        let salted = salted_password(m, password, &salt, i);
        let client_key = sign(m, &salted, b"Client Key");
        let stored = digest::digest(m.digest(), &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let signature = sign(m, stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn sha512_round_trip_and_wrong_password() {
        let m = ScramMechanism::Sha512;
        let credential = ScramCredential::generate(m, b"s3cret").unwrap();
        let parsed = ScramCredential::parse(&credential.to_string()).unwrap();
        assert_eq!(parsed, credential);
        assert!(parsed.verify_password(b"s3cret"));
        assert!(!parsed.verify_password(b"s3cre"));
        for (password, ok) in [(&b"s3cret"[..], true), (b"wrong", false)] {
            let (server, first) = ScramServer::start(
                m,
                b"n,,n=a=3Db=2Cc,r=abc",
                |u| (u == "a=b,c").then(|| parsed.clone()),
                "xyz",
            )
            .unwrap();
            let first = String::from_utf8(first).unwrap();
            let last = client_final(m, password, "n=a=3Db=2Cc,r=abc", &first);
            match server.finish(last.as_bytes()) {
                Ok((user, _)) => assert!(ok && user == "a=b,c"),
                Err(e) => assert!(!ok && e == ScramError::BadProof, "{e:?}"),
            }
        }
    }

    #[test]
    fn refusals() {
        let credential = ScramCredential::generate(ScramMechanism::Sha256, b"p").unwrap();
        let start = |msg: &[u8], m| {
            ScramServer::start(m, msg, |_| Some(credential.clone()), "n").map(|_| ())
        };
        let sha256 = ScramMechanism::Sha256;
        assert_eq!(start(b"n,,n=u,r=x", sha256), Ok(()));
        assert_eq!(
            start(b"n,,n=u,r=x", ScramMechanism::Sha512),
            Err(ScramError::UnknownUser),
            "a credential of the other mechanism is no credential"
        );
        for bad in [
            &b"p=tls-unique,,n=u,r=x"[..],
            b"n,,r=x",
            b"n,,n=u",
            b"n,,n=a=ZZ,r=x",
            b"\xff",
        ] {
            assert!(
                matches!(start(bad, sha256), Err(ScramError::Malformed(_))),
                "{bad:?}"
            );
        }
        let (server, _) =
            ScramServer::start(sha256, b"n,,n=u,r=x", |_| Some(credential.clone()), "n").unwrap();
        assert!(matches!(
            server.finish(b"c=biws,r=OTHER,p=AAAA"),
            Err(ScramError::Malformed("nonce does not match"))
        ));
        for bad in [
            "SCRAM-SHA-1$4096:c2FsdA==$a:b",
            "SCRAM-SHA-256$10:c2FsdA==$a:b",
            "x",
        ] {
            assert!(ScramCredential::parse(bad).is_err(), "{bad}");
        }
    }
}
