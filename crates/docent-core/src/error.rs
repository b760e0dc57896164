//! The one error type every role trait returns. Its variants say what the
//! caller should do (fix the input, retry later, rebuild the index), so the
//! server maps them to HTTP statuses in one place without knowing the backend.

/// A boxed error that can cross threads, used as the `source` of [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias over the shared [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors that cross trait boundaries, classified by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong; fix it and try again.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Too much work queued already; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A dependency (model thread, store, remote endpoint) is not usable right now.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Stored data was built with different settings than the running configuration.
    #[error("{0}")]
    Incompatible(String),
    /// A server docent forwards work to (an OpenAI-compatible generation
    /// server) failed, answered with an error, or did not answer in time.
    /// Shown to HTTP clients as 502, or 504 when `timed_out`.
    #[error("{message}")]
    Upstream { message: String, timed_out: bool },
    /// The caller went away or asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// A bug or an unexpected failure inside a backend.
    #[error("{message}")]
    Internal {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// An internal error wrapping a source error.
    pub fn internal(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Internal {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An unavailable error wrapping a source error.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A setting this machine cannot run (a precision its CPU lacks, say),
    /// as `setting: message`.
    pub fn setting(setting: &str, message: impl std::fmt::Display) -> Self {
        Error::Unavailable {
            message: format!("{setting}: {message}"),
            source: None,
        }
    }
}
