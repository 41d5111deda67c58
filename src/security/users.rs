//! A `users_file`: lines `user:<hash>`, shared by the MQTT listener (`listener.auth`) and the
//! Kafka listener (`log.embedded.kafka_auth`). Blank lines and `#` comments are skipped. The
//! hash is one of:
//! - argon2id (PHC string, `$argon2id$...`, what `tributary passwd USER` writes);
//! - bcrypt (`$2a$`/`$2b$`/`$2y$`, as `htpasswd -B` writes);
//! - a SCRAM credential (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, what
//!   `tributary passwd USER --mechanism SCRAM-SHA-256` writes): the only kind SCRAM can use,
//!   and checked against a plain password too.

use super::scram::{ScramCredential, ScramMechanism};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone)]
enum Hash {
    Argon2(String),
    Bcrypt(String),
    Scram(ScramCredential),
}

/// The users of a `users_file`.
#[derive(Debug, Clone, Default)]
pub struct Users(HashMap<String, Hash>);

impl Users {
    /// Reads `path`; each error names its line.
    pub fn load(path: &Path) -> Result<Users, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        Users::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Users, Vec<String>> {
        let mut users = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let Some((user, hash)) = line.split_once(':') else {
                errors.push(format!(
                    "line {n}: expected user:<hash>, as `tributary passwd USER` prints"
                ));
                continue;
            };
            match parse_hash(hash) {
                Ok(hash) => {
                    if user.is_empty() || users.insert(user.to_string(), hash).is_some() {
                        errors.push(format!("line {n}: user {user:?} is empty or listed twice"));
                    }
                }
                Err(e) => errors.push(format!("line {n}: user {user}: {e}")),
            }
        }
        match errors.is_empty() {
            true => Ok(Users(users)),
            false => Err(errors),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `password` is `user`'s. Slow by design (argon2id, bcrypt, PBKDF2): call it off
    /// the runtime threads.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.0.get(user) {
            Some(Hash::Argon2(phc)) => PasswordHash::new(phc)
                .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok()),
            Some(Hash::Bcrypt(hash)) => bcrypt::verify(password, hash).unwrap_or(false),
            Some(Hash::Scram(credential)) => credential.verify_password(password),
            None => false,
        }
    }

    /// `user`'s SCRAM credential for `mechanism`, if the file holds one.
    pub fn scram(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        match self.0.get(user) {
            Some(Hash::Scram(c)) if c.mechanism == mechanism => Some(c.clone()),
            _ => None,
        }
    }

    /// The users whose line SCRAM with `mechanism` cannot use (a password hash, or the other
    /// SCRAM), sorted.
    pub fn without_scram(&self, mechanism: ScramMechanism) -> Vec<&str> {
        let mut users: Vec<&str> = self
            .0
            .iter()
            .filter(|(_, h)| !matches!(h, Hash::Scram(c) if c.mechanism == mechanism))
            .map(|(u, _)| u.as_str())
            .collect();
        users.sort_unstable();
        users
    }
}

fn parse_hash(hash: &str) -> Result<Hash, String> {
    if hash.starts_with("$argon2") {
        PasswordHash::new(hash).map_err(|e| format!("not a valid argon2 hash ({e})"))?;
        Ok(Hash::Argon2(hash.to_string()))
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        match hash.len() {
            60 => Ok(Hash::Bcrypt(hash.to_string())),
            _ => Err("a bcrypt hash is 60 characters".into()),
        }
    } else if hash.starts_with("SCRAM-") {
        ScramCredential::parse(hash).map(Hash::Scram)
    } else {
        Err(
            "the hash must be argon2id ($argon2id$...), bcrypt ($2b$...) or SCRAM \
             (SCRAM-SHA-256$...); make one with `tributary passwd USER`"
                .into(),
        )
    }
}

/// An argon2id hash of `password` with a fresh salt, as a PHC string for `users_file`.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_verifies_a_plain_password() {
        let argon = hash_password(b"a").unwrap();
        let bcrypt = bcrypt::hash("b", 4).unwrap();
        let scram = ScramCredential::generate(ScramMechanism::Sha256, b"c").unwrap();
        let users = Users::parse(&format!("# x\nua:{argon}\n\nub:{bcrypt}\nuc:{scram}\n")).unwrap();
        assert_eq!(users.len(), 3);
        for (user, password) in [("ua", "a"), ("ub", "b"), ("uc", "c")] {
            assert!(users.verify(user, password.as_bytes()), "{user}");
            assert!(!users.verify(user, b"wrong"), "{user}");
        }
        assert!(!users.verify("nobody", b"a"));
        assert!(users.scram("uc", ScramMechanism::Sha256).is_some());
        assert!(users.scram("uc", ScramMechanism::Sha512).is_none());
        assert_eq!(users.without_scram(ScramMechanism::Sha256), ["ua", "ub"]);
        assert_eq!(
            users.without_scram(ScramMechanism::Sha512),
            ["ua", "ub", "uc"]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let errors =
            Users::parse("ok:$2b$04$short\nnocolon\nu:plaintext\ns:SCRAM-SHA-256$1:x$y:z\n")
                .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("line 1: user ok"), "{errors:?}");
        assert!(errors[1].starts_with("line 2:"), "{errors:?}");
        assert!(errors[2].contains("tributary passwd USER"), "{errors:?}");
        assert!(
            errors[3].starts_with("line 4: user s: iterations"),
            "{errors:?}"
        );
    }
}
