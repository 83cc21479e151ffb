//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong, with enough context to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter could be found.
    #[error(
        "no GPU adapter found ({0}); on Linux without a GPU install Mesa's lavapipe: \
         `apt-get install -y mesa-vulkan-drivers libvulkan1`"
    )]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("could not create a GPU device: {0}")]
    Device(String),
    /// wgpu reported a validation or out-of-memory error.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// A buffer would exceed what the adapter allows.
    #[error("{what} needs {bytes} bytes but the adapter allows at most {limit} bytes per {kind}")]
    TooLarge {
        /// What was being allocated.
        what: String,
        /// Bytes needed.
        bytes: u64,
        /// The adapter's limit.
        limit: u64,
        /// Which limit (buffer, binding, dispatch).
        kind: &'static str,
    },
    /// A tensor is missing, has the wrong shape or dtype, or holds bad values.
    #[error("tensor `{name}`: {msg}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong, and what was expected.
        msg: String,
    },
    /// Invalid configuration or argument.
    #[error("{0}")]
    Invalid(String),
    /// stdout's reader went away (`| head`): not a failure, the program
    /// ends quietly with exit 0.
    #[error("stdout closed by its reader")]
    StdoutClosed,
    /// A file could not be read, written or parsed.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

impl Error {
    /// Shorthand for a tensor error.
    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }
    /// Shorthand for a file error.
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}

/// Crate result type.
pub type Result<T> = std::result::Result<T, Error>;
