//! SCRAM computed on the test's side (RFC 5802 with HMAC and PBKDF2 written out over `sha2`),
//! so neither the credentials the gateway is given nor the proofs it checks come only from the
//! code under test: users_file lines in the RFC 5803 form, `tributary passwd`'s output checked
//! against the password, and the client side of an exchange (raw.rs) that also verifies the
//! server's signature.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    /// The hash of a SCRAM mechanism name; None for PLAIN.
    pub fn of(mechanism: &str) -> Option<Hash> {
        match mechanism {
            "SCRAM-SHA-256" => Some(Hash::Sha256),
            "SCRAM-SHA-512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub fn mechanism(self) -> &'static str {
        match self {
            Hash::Sha256 => "SCRAM-SHA-256",
            Hash::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Output length in bytes.
    pub fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    fn block(self) -> usize {
        match self {
            Hash::Sha256 => 64,
            Hash::Sha512 => 128,
        }
    }

    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut h = Sha256::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().to_vec()
            }
            Hash::Sha512 => {
                let mut h = Sha512::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().to_vec()
            }
        }
    }

    /// HMAC (RFC 2104).
    pub fn hmac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > self.block() {
            self.digest(&[key])
        } else {
            key.to_vec()
        };
        k.resize(self.block(), 0);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = self.digest(&[&ipad, message]);
        self.digest(&[&opad, &inner])
    }

    /// SCRAM's Hi(): PBKDF2 with this HMAC, one block of output.
    pub fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = self.hmac(password, &[salt, &1u32.to_be_bytes()].concat());
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }
}

/// What a server stores for a SCRAM user (RFC 5802 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub hash: Hash,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// The client's keys for `password` (ASCII passwords: SASLprep changes nothing).
pub struct Keys {
    pub client_key: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

pub fn keys(hash: Hash, password: &str, salt: &[u8], iterations: u32) -> Keys {
    let salted = hash.hi(password.as_bytes(), salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    Keys {
        stored_key: hash.digest(&[&client_key]),
        server_key: hash.hmac(&salted, b"Server Key"),
        client_key,
    }
}

impl Credential {
    pub fn new(hash: Hash, password: &str, salt: &[u8], iterations: u32) -> Credential {
        let k = keys(hash, password, salt, iterations);
        Credential {
            hash,
            iterations,
            salt: salt.to_vec(),
            stored_key: k.stored_key,
            server_key: k.server_key,
        }
    }

    /// The RFC 5803 form: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn rfc5803(&self) -> String {
        format!(
            "{}${}:{}${}:{}",
            self.hash.mechanism(),
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }

    /// Parses the RFC 5803 form strictly (standard base64 with padding, key lengths of the hash).
    pub fn parse(text: &str) -> Result<Credential, String> {
        let (mechanism, rest) = text.split_once('$').ok_or("no `$` after the mechanism")?;
        let hash = Hash::of(mechanism).ok_or(format!("mechanism {mechanism:?}"))?;
        let (params, keys) = rest.split_once('$').ok_or("no `$` before the keys")?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or("no `:` after the iterations")?;
        let (stored, server) = keys.split_once(':').ok_or("no `:` between the keys")?;
        let decode = |what: &str, s: &str| {
            B64.decode(s)
                .map_err(|e| format!("{what} {s:?} is not base64: {e}"))
        };
        let credential = Credential {
            hash,
            iterations: iterations
                .parse()
                .map_err(|e| format!("iterations {iterations:?}: {e}"))?,
            salt: decode("salt", salt)?,
            stored_key: decode("StoredKey", stored)?,
            server_key: decode("ServerKey", server)?,
        };
        if credential.stored_key.len() != hash.len() || credential.server_key.len() != hash.len() {
            return Err(format!("keys of {} bytes expected", hash.len()));
        }
        if credential.salt.is_empty() {
            return Err("an empty salt".into());
        }
        Ok(credential)
    }

    /// Whether `password` is the one this credential was made from.
    pub fn verifies(&self, password: &str) -> bool {
        *self == Credential::new(self.hash, password, &self.salt, self.iterations)
    }
}

/// The nonce a client puts in client-final-message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalNonce {
    /// The server's, as RFC 5802 says.
    Server,
    /// The client's nonce again before the server's: what librdkafka before 2.6.1 sends
    /// (librdkafka #4895; Debian's kcat 1.7.1 has librdkafka 2.0.2), which Apache Kafka accepts
    /// since 3.8.1 (the server's nonce must end the client's).
    Doubled,
    /// The server's with a character changed: a replay or a tampered message.
    Tampered,
}

/// The client side of one SCRAM exchange (RFC 5802 section 5), message by message.
pub struct Client {
    hash: Hash,
    password: String,
    first_bare: String,
    nonce: String,
    final_nonce: FinalNonce,
    expected_server_signature: Option<Vec<u8>>,
}

impl Client {
    pub fn new(hash: Hash, user: &str, password: &str, nonce: &str) -> Client {
        Client {
            hash,
            password: password.into(),
            first_bare: format!(
                "n={},r={nonce}",
                user.replace('=', "=3D").replace(',', "=2C")
            ),
            nonce: nonce.into(),
            final_nonce: FinalNonce::Server,
            expected_server_signature: None,
        }
    }

    pub fn final_nonce(mut self, how: FinalNonce) -> Client {
        self.final_nonce = how;
        self
    }

    /// client-first-message (no channel binding, no authzid).
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// The server-first-message's fields, checked: the nonce extends ours; returns the salt and
    /// iterations with client-final-message.
    pub fn last(&mut self, server_first: &[u8]) -> Result<(Vec<u8>, u32, Vec<u8>), String> {
        let text = std::str::from_utf8(server_first).map_err(|e| e.to_string())?;
        let field = |name: &str| {
            text.split(',')
                .find_map(|f| f.strip_prefix(name))
                .ok_or(format!("server-first-message {text:?} has no {name}"))
        };
        let nonce = field("r=")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(format!(
                "server nonce {nonce:?} does not extend the client's {:?}",
                self.nonce
            ));
        }
        let salt = B64.decode(field("s=")?).map_err(|e| format!("salt: {e}"))?;
        let iterations: u32 = field("i=")?.parse().map_err(|e| format!("i: {e}"))?;
        let without_proof = match self.final_nonce {
            FinalNonce::Server => format!("c=biws,r={nonce}"),
            FinalNonce::Doubled => format!("c=biws,r={}{nonce}", self.nonce),
            FinalNonce::Tampered => {
                let mut tampered = nonce.to_string();
                let last = if tampered.pop() == Some('A') {
                    'B'
                } else {
                    'A'
                };
                tampered.push(last);
                format!("c=biws,r={tampered}")
            }
        };
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let k = keys(self.hash, &self.password, &salt, iterations);
        let signature = self.hash.hmac(&k.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = k
            .client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.expected_server_signature =
            Some(self.hash.hmac(&k.server_key, auth_message.as_bytes()));
        let last = format!("{without_proof},p={}", B64.encode(proof));
        Ok((salt, iterations, last.into_bytes()))
    }

    /// Checks server-final-message's `v=` against the signature only the holder of ServerKey
    /// can make.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|e| e.to_string())?;
        let v = text
            .split(',')
            .find_map(|f| f.strip_prefix("v="))
            .ok_or(format!("server-final-message {text:?} has no v="))?;
        let got = B64.decode(v).map_err(|e| format!("v: {e}"))?;
        let want = self
            .expected_server_signature
            .as_ref()
            .ok_or("no proof sent yet")?;
        if &got != want {
            return Err(format!("server signature {v} is not the expected one"));
        }
        Ok(())
    }
}

#[test]
fn rfc7677_example_verifies() {
    // RFC 7677 section 3: user "user", password "pencil", SCRAM-SHA-256.
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let mut c = Client::new(Hash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
    assert_eq!(c.first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let (_, i, last) = c
        .last(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        .unwrap();
    assert_eq!(i, 4096);
    assert_eq!(
        String::from_utf8(last).unwrap(),
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        .unwrap();
    let cred = Credential::new(Hash::Sha256, "pencil", &salt, 4096);
    assert_eq!(Credential::parse(&cred.rfc5803()).unwrap(), cred);
    assert!(cred.verifies("pencil") && !cred.verifies("pencil2"));
}
