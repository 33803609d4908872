//! The error type of the IR crate.

/// Everything that can go wrong while building, checking, importing or exporting a graph.
///
/// Each message names the node, tensor or file it is about, so that the CLI can print it
/// as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The input is not a well-formed ONNX model (truncated, not protobuf, wrong field).
    #[error("{0}")]
    Decode(String),
    /// The graph breaks an IR invariant (cycle, dangling name, arity, shape mismatch).
    #[error("{0}")]
    Invalid(String),
    /// A tensor or attribute holds something the IR cannot represent.
    #[error("{0}")]
    Unsupported(String),
}

/// Result with the IR error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Invalid`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    /// An [`Error::Decode`] from anything printable.
    pub fn decode(msg: impl Into<String>) -> Self {
        Error::Decode(msg.into())
    }
    /// An [`Error::Unsupported`] from anything printable.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
