//! Who may connect to the listener: with `auth.users_file`, CONNECT's user and password are
//! checked against its lines (`security::users`); anonymous access is what `allow_anonymous`
//! says.

use crate::security::users::Users;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::users::hash_password;

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
}
