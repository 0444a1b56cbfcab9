use rustix::fs::{flock, FlockOperation};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open lock file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An advisory `flock(2)` lock, released on drop or when the process dies
/// (so a SIGKILLed process never leaves a stale lock behind).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn shared(path: &Path) -> Result<Self, LockError> {
        Self::take(path, FlockOperation::LockShared).map(|l| l.expect("blocking lock"))
    }

    pub fn exclusive(path: &Path) -> Result<Self, LockError> {
        Self::take(path, FlockOperation::LockExclusive).map(|l| l.expect("blocking lock"))
    }

    /// Exclusive lock without waiting; `None` when someone else holds it.
    pub fn try_exclusive(path: &Path) -> Result<Option<Self>, LockError> {
        Self::take(path, FlockOperation::NonBlockingLockExclusive)
    }

    fn take(path: &Path, op: FlockOperation) -> Result<Option<Self>, LockError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        loop {
            match flock(&file, op) {
                Ok(()) => return Ok(Some(Self { _file: file })),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => {
                    return Err(LockError::Lock {
                        path: path.to_path_buf(),
                        source: std::io::Error::from(e),
                    })
                }
            }
        }
    }
}
