use std::fmt;

/// What kind of failure, for exit codes and (later) HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The named object does not exist.
    NotFound,
    /// A name or ID prefix matches several objects.
    Ambiguous,
    /// The operation conflicts with current state (in use, exists).
    Conflict,
    /// The input is wrong (bad reference, bad file, corrupted content).
    Invalid,
    /// Something the host lacks (a tool, a device, a permission).
    Unavailable,
    /// Anything else: I/O, database.
    Internal,
}

/// A service-layer error: a kind, a message that says what was wrong and
/// what to do, and the chain of causes.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn internal(what: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::with_source(ErrorKind::Internal, format!("cannot {what}"), source)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ignis_state::DbError> for Error {
    fn from(e: ignis_state::DbError) -> Self {
        Self::internal("update the state database", e)
    }
}
