//! [`DataError`]: what went wrong while reading data, and in which file.

use std::path::PathBuf;

/// An error from a data reader. Each variant names the file or folder at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The folder exists but holds nothing usable.
    #[error("{}: {what}", path.display())]
    Empty {
        /// The folder.
        path: PathBuf,
        /// What was expected there.
        what: String,
    },
    /// A file that should be an image could not be decoded.
    #[error("{}: not a readable image: {reason}", path.display())]
    BadImage {
        /// The file.
        path: PathBuf,
        /// Why decoding failed.
        reason: String,
    },
    /// A CIFAR batch file is malformed.
    #[error("{}: {reason}", path.display())]
    BadCifar {
        /// The file.
        path: PathBuf,
        /// What is wrong (size, label byte, ...).
        reason: String,
    },
    /// Anything else wrong with the input (a bad `--data` string, mismatched splits, ...).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
