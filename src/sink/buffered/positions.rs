//! Forwarded positions: per buffered partition, the offset below which every record is in
//! Kafka. Stored durably in the buffer dir, in `@forwarded/<topic>-<partition>` (a decimal
//! offset), written atomically and only after Kafka's delivery report. '@' cannot start a topic
//! name, so the log never takes the folder for a topic.

use crate::log::{write_atomic, LogError, Offset};
use std::path::{Path, PathBuf};

/// The folder, inside the buffer dir.
pub const FORWARDED_DIR: &str = "@forwarded";

/// Where the forwarded positions of one buffer dir live.
#[derive(Debug, Clone)]
pub struct Positions {
    dir: PathBuf,
}

impl Positions {
    /// The positions of the buffer in `buffer_dir` (the folder is made on the first store).
    pub fn new(buffer_dir: &Path) -> Positions {
        Positions {
            dir: buffer_dir.join(FORWARDED_DIR),
        }
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
        let positions = Positions::new(dir.path());
        assert_eq!(positions.load("t.x-1", 3).unwrap(), None);
        positions.store("t.x-1", 3, Offset(42)).unwrap();
        positions.store("t.x-1", 3, Offset(43)).unwrap();
        assert_eq!(positions.load("t.x-1", 3).unwrap(), Some(Offset(43)));
        assert_eq!(positions.load("t.x-1", 4).unwrap(), None);
        let again = Positions::new(dir.path());
        assert_eq!(again.load("t.x-1", 3).unwrap(), Some(Offset(43)));
        std::fs::write(dir.path().join(FORWARDED_DIR).join("t-0"), "x").unwrap();
        assert!(matches!(again.load("t", 0), Err(LogError::Corrupt { .. })));
    }
}
