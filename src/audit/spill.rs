//! The spill file: outcomes that could not reach the store, one JSON line each, appended and
//! fsync'd per batch, replayed from the front. Only the audit writer task touches it, and it
//! does the file I/O on the blocking pool so no async worker waits on the disk.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::Outcome;

/// Why the spill file failed.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("audit spill file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the spill worker stopped")]
    Stopped,
}

/// An append-only file of outcomes still owed to the store.
#[derive(Debug)]
pub struct Spill {
    path: PathBuf,
    /// Bytes from the start already replayed (the file is truncated once all are).
    replayed: u64,
    /// Bytes in the file.
    len: u64,
}

impl Spill {
    /// Opens (creating its directory) the spill file at `path`.
    pub fn open(path: &Path) -> Result<Self, SpillError> {
        let io = |source| SpillError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(Self {
            path: path.to_owned(),
            replayed: 0,
            len,
        })
    }

    /// Whether outcomes are waiting for replay.
    pub fn is_empty(&self) -> bool {
        self.replayed >= self.len
    }

    /// Appends `batch` and fsyncs.
    pub async fn append(&mut self, batch: Vec<Outcome>) -> Result<(), SpillError> {
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || -> Result<u64, SpillError> {
            let io = |source| SpillError::Io {
                path: path.clone(),
                source,
            };
            let mut text = Vec::with_capacity(batch.len() * 512);
            for outcome in &batch {
                serde_json::to_writer(&mut text, outcome)
                    .map_err(|e| io(std::io::Error::other(e)))?;
                text.push(b'\n');
            }
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            file.write_all(&text).map_err(io)?;
            file.sync_data().map_err(io)?;
            Ok(text.len() as u64)
        })
        .await
        .map_err(|_| SpillError::Stopped)??;
        self.len += written;
        Ok(())
    }

    /// Reads up to `max` outcomes from the replay position. Returns them and the byte position
    /// after them, to pass to [`Spill::advance`] once the store has them. A line that does not
    /// parse (a torn write at a crash) is skipped with an error log.
    pub async fn peek(&self, max: usize) -> Result<(Vec<Outcome>, u64), SpillError> {
        let (path, from) = (self.path.clone(), self.replayed);
        tokio::task::spawn_blocking(move || -> Result<(Vec<Outcome>, u64), SpillError> {
            let io = |source| SpillError::Io {
                path: path.clone(),
                source,
            };
            let mut file = File::open(&path).map_err(io)?;
            file.seek(SeekFrom::Start(from)).map_err(io)?;
            let mut reader = BufReader::new(file);
            let mut out = Vec::new();
            let mut pos = from;
            let mut line = String::new();
            while out.len() < max {
                line.clear();
                let n = reader.read_line(&mut line).map_err(io)?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                pos += n as u64;
                match serde_json::from_str::<Outcome>(line.trim_end()) {
                    Ok(o) => out.push(o),
                    Err(e) => tracing::error!(error = %e, "skipping an unreadable line of the audit spill file"),
                }
            }
            Ok((out, pos))
        })
        .await
        .map_err(|_| SpillError::Stopped)?
    }

    /// Marks everything before `pos` as replayed; truncates the file once all of it is.
    pub async fn advance(&mut self, pos: u64) -> Result<(), SpillError> {
        self.replayed = pos;
        if self.replayed >= self.len {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || {
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(0)?;
                file.sync_all()
            })
            .await
            .map_err(|_| SpillError::Stopped)?
            .map_err(|source| SpillError::Io {
                path: self.path.clone(),
                source,
            })?;
            self.replayed = 0;
            self.len = 0;
        }
        Ok(())
    }
}
