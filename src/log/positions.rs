//! Durable read positions: per partition, the offset below which a reader is done with every
//! record. Each position is one small file `<topic>-<partition>` (a decimal offset) in a folder
//! whose name starts with '@' (no topic name can, so the log never takes it for a topic),
//! written atomically. The buffered Kafka sink keeps what it forwarded in
//! `<buffer dir>/@forwarded/`; each egress route what it delivered in `<dir>/@egress/<route>/`.

use super::{write_atomic, LogError, Offset};
use std::path::{Path, PathBuf};

/// The folder of the buffered sink's forwarded positions, inside the buffer dir.
pub const FORWARDED_DIR: &str = "@forwarded";
/// The folder of the egress routes' delivered positions, inside the log dir.
pub const EGRESS_DIR: &str = "@egress";

/// One folder of positions.
#[derive(Debug, Clone)]
pub struct Positions {
    dir: PathBuf,
}

impl Positions {
    /// The positions kept in `dir` (made on the first store).
    pub fn in_dir(dir: PathBuf) -> Positions {
        Positions { dir }
    }

    /// What a buffered sink forwarded from the buffer in `buffer_dir`.
    pub fn forwarded(buffer_dir: &Path) -> Positions {
        Positions::in_dir(buffer_dir.join(FORWARDED_DIR))
    }

    /// What the egress route `route` delivered from the log in `log_dir`.
    pub fn egress(log_dir: &Path, route: &str) -> Positions {
        Positions::in_dir(log_dir.join(EGRESS_DIR).join(route))
    }

    fn path(&self, topic: &str, partition: u32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}"))
    }

    /// The stored position, or `None` when nothing was forwarded yet.
    pub fn load(&self, topic: &str, partition: u32) -> Result<Option<Offset>, LogError> {
        let path = self.path(topic, partition);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                text.trim()
                    .parse()
                    .map(|o| Some(Offset(o)))
                    .map_err(|e| LogError::Corrupt {
                        path,
                        position: 0,
                        reason: format!("not an offset: {e}"),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::io(&path, e)),
        }
    }

    /// Stores `offset` durably (written whole, then renamed, then the folder synced).
    pub fn store(&self, topic: &str, partition: u32, offset: Offset) -> Result<(), LogError> {
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        }
        write_atomic(
            &self.path(topic, partition),
            offset.0.to_string().as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_start_empty() {
        let dir = tempfile::tempdir().unwrap();
        let positions = Positions::forwarded(dir.path());
        assert_eq!(positions.load("t.x-1", 3).unwrap(), None);
        positions.store("t.x-1", 3, Offset(42)).unwrap();
        positions.store("t.x-1", 3, Offset(43)).unwrap();
        assert_eq!(positions.load("t.x-1", 3).unwrap(), Some(Offset(43)));
        assert_eq!(positions.load("t.x-1", 4).unwrap(), None);
        let again = Positions::forwarded(dir.path());
        assert_eq!(again.load("t.x-1", 3).unwrap(), Some(Offset(43)));
        std::fs::write(dir.path().join(FORWARDED_DIR).join("t-0"), "x").unwrap();
        assert!(matches!(again.load("t", 0), Err(LogError::Corrupt { .. })));
    }
}
