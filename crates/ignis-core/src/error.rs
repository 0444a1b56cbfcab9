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
/// what to do, the input field it is about (a front end names it its own
/// way: `--memory`, `spec.memory`), and the chain of causes, attached once.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<crate::vm::Field>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
            source: None,
        }
    }

    /// An error about input field `field`.
    pub fn about(mut self, field: crate::vm::Field) -> Self {
        self.field = Some(field);
        self
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
            source: Some(Box::new(source)),
        }
    }

    /// An error whose message is `source`'s own: its causes start below
    /// it (the message is never repeated as its own cause).
    pub fn wrap(kind: ErrorKind, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            kind,
            message: source.to_string(),
            field: None,
            source: Some(Box::new(Transparent(Box::new(source)))),
        }
    }

    pub fn internal(what: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::with_source(ErrorKind::Internal, format!("cannot {what}"), source)
    }
}

impl fmt::Display for Error {
    /// `field: message` (the field by its API name, e.g. `memory`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{}: {}", field.name(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let s = self.source.as_deref()?;
        // A wrapped error's message is ours: its cause is the next one.
        match s.downcast_ref::<Transparent>() {
            Some(t) => t.0.source(),
            None => Some(s as &(dyn std::error::Error + 'static)),
        }
    }
}

/// The error inside [`Error::wrap`]: kept (for downcasting) but not shown.
#[derive(Debug)]
struct Transparent(Box<dyn std::error::Error + Send + Sync + 'static>);

impl fmt::Display for Transparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Transparent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<ignis_state::DbError> for Error {
    fn from(e: ignis_state::DbError) -> Self {
        Self::internal("update the state database", e)
    }
}
