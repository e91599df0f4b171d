//! The one error type of this crate.

use std::fmt;

use crate::SchemaError;

/// Everything that can go wrong building a [`crate::DispatchConfig`] or loading a rules
/// file or kernel catalog.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A [`crate::DispatchConfig`] field out of range.
    #[error("{field} {message}")]
    InvalidField {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A `LAYERZERO_*` environment variable that is set but cannot be read.
    #[error("{variable}: expected {expected}, got `{value}`")]
    InvalidEnv {
        /// The variable's name.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: String,
    },
    /// A dispatch mode name that is not one of the five.
    #[error("invalid dispatch mode `{value}`{}", did_you_mean(*suggestion))]
    InvalidMode {
        /// The name as given.
        value: String,
        /// The nearest mode name.
        suggestion: Option<&'static str>,
    },
    /// A rules file that breaks the schema: every problem found, in file order.
    #[error("{}", SchemaErrors(errors))]
    Schema {
        /// The problems, each with its path and position.
        errors: Vec<SchemaError>,
    },
    /// A kernel catalog that cannot be read.
    #[error("kernel catalog: {message}")]
    Catalog {
        /// What is wrong, with the line and column when known.
        message: String,
    },
}

fn did_you_mean(suggestion: Option<&'static str>) -> String {
    suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
}

/// Formats schema errors one per line, each with its position, like a compiler.
pub(crate) struct SchemaErrors<'a>(pub(crate) &'a [SchemaError]);

impl fmt::Display for SchemaErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(f, "{count} schema error{}", if count == 1 { "" } else { "s" })?;
        for error in self.0 {
            write!(f, "\n  {}", error.located())?;
        }
        Ok(())
    }
}
