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
    /// A check ran and its result is outside what it accepts (`check-cell`:
    /// the program exits 1, not 2: the input was fine, the cell is not).
    #[error("check failed: {0}")]
    CheckFailed(String),
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

/// A number for a message: as Rust prints it (the shortest form that
/// reads back the same), but in exponent form (`1e300`, `2.5e-200`) when
/// the digits run long: huge and tiny values print hundreds of them.
pub fn num<T: Copy + std::fmt::Display + std::fmt::LowerExp>(v: T) -> String {
    let plain = v.to_string();
    let exp = format!("{v:e}");
    if plain.len() > 12 && exp.len() < plain.len() {
        exp
    } else {
        plain
    }
}

/// Text quoted in a message, cut to its first 60 characters (a cell or a
/// line of a corrupt file may be any length).
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Crate result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_in_messages_stay_short() {
        assert_eq!(num(1e300), "1e300");
        assert_eq!(num(-2.5e-200), "-2.5e-200");
        assert_eq!(num(f32::MAX), "3.4028235e38");
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(1000.0), "1000");
        assert_eq!(num(123456.789), "123456.789");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(num(f64::INFINITY), "inf");
        assert_eq!(clip("abc"), "abc");
        let long = "9".repeat(400);
        assert_eq!(clip(&long), format!("{}…", "9".repeat(60)));
    }
}
