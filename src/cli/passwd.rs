//! `tributary passwd USER [--mechanism SCRAM-SHA-256|SCRAM-SHA-512]`: reads a password and
//! prints the `users_file` line for it.

use crate::security::scram::{ScramCredential, ScramMechanism};
use crate::security::users::hash_password;
use std::io::{BufRead, IsTerminal, Write};

/// A SCRAM mechanism to make a credential for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

/// Reads the password from stdin (without echo on a terminal) and returns `USER:<argon2id>`,
/// or `USER:<SCRAM credential>` for a mechanism.
pub fn line(user: &str, mechanism: Option<Mechanism>) -> anyhow::Result<String> {
    if user.is_empty() || user.contains([':', '\n', '\r']) || user.trim() != user {
        anyhow::bail!("user {user:?}: a user name is not empty and has no ':', line break or surrounding space");
    }
    let password = read_password()?;
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let hash = match mechanism {
        None => hash_password(password.as_bytes()),
        Some(m) => {
            let m = match m {
                Mechanism::ScramSha256 => ScramMechanism::Sha256,
                Mechanism::ScramSha512 => ScramMechanism::Sha512,
            };
            ScramCredential::generate(m, password.as_bytes()).map(|c| c.to_string())
        }
    }
    .map_err(anyhow::Error::msg)?;
    Ok(format!("{user}:{hash}"))
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("password: ");
        let _ = std::io::stderr().flush();
    }
    let _echo = terminal.then(EchoOff::new).flatten();
    let mut password = String::new();
    stdin.lock().read_line(&mut password)?;
    if terminal {
        eprintln!();
    }
    Ok(password.trim_end_matches(['\n', '\r']).to_string())
}

/// Turns the terminal's echo off until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr fills the termios we pass; fd 0 is stdin, a terminal here.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            (libc::tcsetattr(0, libc::TCSANOW, &quiet) == 0).then_some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same descriptor.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}
