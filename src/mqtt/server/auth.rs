//! Who may connect to the listener: `auth.users_file` holds lines `user:<hash>`, the hash
//! argon2id (PHC string, `$argon2id$...`, what `tributary passwd` writes) or bcrypt
//! (`$2a$`/`$2b$`/`$2y$`, as `htpasswd -B` writes). Blank lines and `#` comments are skipped.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::collections::HashMap;
use std::path::Path;

/// What the listener's CONNECT check decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// A user and password were given and do not match (or the user is unknown).
    BadCredentials,
    /// No user given, and anonymous connections are off.
    AnonymousRefused,
}

/// The listener's auth settings, loaded.
#[derive(Debug, Clone)]
pub struct Auth {
    allow_anonymous: bool,
    users: Option<Users>,
}

impl Auth {
    pub fn new(allow_anonymous: bool, users: Option<Users>) -> Auth {
        Auth {
            allow_anonymous,
            users,
        }
    }

    /// Checks a CONNECT's credentials; slow by design (argon2id, bcrypt): call it off the
    /// runtime threads.
    pub fn check(&self, username: Option<&str>, password: Option<&[u8]>) -> Verdict {
        match (username, &self.users) {
            (Some(user), Some(users)) => match users.verify(user, password.unwrap_or_default()) {
                true => Verdict::Allowed,
                false => Verdict::BadCredentials,
            },
            // Without a users file there is nobody to check against: only anonymous access.
            (Some(_), None) | (None, _) => match self.allow_anonymous {
                true => Verdict::Allowed,
                false => Verdict::AnonymousRefused,
            },
        }
    }
}

#[derive(Debug, Clone)]
enum Hash {
    Argon2(String),
    Bcrypt(String),
}

/// The users of `users_file`.
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
            let hash = if hash.starts_with("$argon2") {
                match PasswordHash::new(hash) {
                    Ok(_) => Hash::Argon2(hash.to_string()),
                    Err(e) => {
                        errors.push(format!(
                            "line {n}: user {user}: not a valid argon2 hash ({e})"
                        ));
                        continue;
                    }
                }
            } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                if hash.len() != 60 {
                    errors.push(format!(
                        "line {n}: user {user}: a bcrypt hash is 60 characters"
                    ));
                    continue;
                }
                Hash::Bcrypt(hash.to_string())
            } else {
                errors.push(format!("line {n}: user {user}: the hash must be argon2id ($argon2id$...) or bcrypt ($2b$...); make one with `tributary passwd {user}`"));
                continue;
            };
            if user.is_empty() || users.insert(user.to_string(), hash).is_some() {
                errors.push(format!("line {n}: user {user:?} is empty or listed twice"));
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

    fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.0.get(user) {
            Some(Hash::Argon2(phc)) => PasswordHash::new(phc)
                .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok()),
            Some(Hash::Bcrypt(hash)) => bcrypt::verify(password, hash).unwrap_or(false),
            None => false,
        }
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
    fn argon2_and_bcrypt_lines_verify() {
        let argon = hash_password(b"s3cret").unwrap();
        assert!(argon.starts_with("$argon2id$"), "{argon}");
        let bcrypt = bcrypt::hash("hunter2", 4).unwrap();
        let text = format!("# devices\nd1:{argon}\n\nd2:{bcrypt}\n");
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        let auth = Auth::new(false, Some(users));
        assert_eq!(auth.check(Some("d1"), Some(b"s3cret")), Verdict::Allowed);
        assert_eq!(auth.check(Some("d2"), Some(b"hunter2")), Verdict::Allowed);
        assert_eq!(
            auth.check(Some("d1"), Some(b"hunter2")),
            Verdict::BadCredentials
        );
        assert_eq!(
            auth.check(Some("d3"), Some(b"s3cret")),
            Verdict::BadCredentials
        );
        assert_eq!(auth.check(Some("d1"), None), Verdict::BadCredentials);
        assert_eq!(auth.check(None, None), Verdict::AnonymousRefused);
    }

    #[test]
    fn anonymous_access_is_what_allow_anonymous_says() {
        assert_eq!(Auth::new(true, None).check(None, None), Verdict::Allowed);
        assert_eq!(
            Auth::new(true, Some(Users::default())).check(Some("x"), Some(b"y")),
            Verdict::BadCredentials,
            "a user that is given is checked even when anonymous access is on"
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let errors = Users::parse("ok:$2b$04$short\nnocolon\nu:plaintext\n").unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("line 1: user ok"), "{errors:?}");
        assert!(errors[1].starts_with("line 2:"), "{errors:?}");
        assert!(errors[2].contains("tributary passwd u"), "{errors:?}");
    }
}
