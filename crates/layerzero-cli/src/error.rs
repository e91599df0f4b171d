//! The binary's one error type and its exit codes.

use std::fmt;

/// Why a command did not succeed, and so which exit code it ends with.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The input is invalid or a check failed: exit code 1. An empty message means the
    /// command already printed its report.
    Invalid(String),
    /// Usage or I/O: a file that cannot be read or written, arguments that do not fit
    /// together: exit code 2.
    Usage(String),
    /// Whoever reads stdout stopped reading (`layerzero schema | head`): exit 0, quietly.
    StdoutClosed,
}

impl CliError {
    pub(crate) fn invalid(message: impl fmt::Display) -> CliError {
        CliError::Invalid(message.to_string())
    }

    pub(crate) fn usage(message: impl fmt::Display) -> CliError {
        CliError::Usage(message.to_string())
    }

    /// An I/O failure on `path`.
    pub(crate) fn io(path: &std::path::Path, error: impl fmt::Display) -> CliError {
        CliError::Usage(format!("{}: {error}", path.display()))
    }

    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::StdoutClosed => 0,
            CliError::Invalid(_) => 1,
            CliError::Usage(_) => 2,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            CliError::Invalid(m) | CliError::Usage(m) => m,
            CliError::StdoutClosed => "",
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> CliError {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError::StdoutClosed;
        }
        CliError::Usage(error.to_string())
    }
}
