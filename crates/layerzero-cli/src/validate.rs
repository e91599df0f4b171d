//! `layerzero validate FILE...`: every schema error and lint warning of each rules file,
//! located like a compiler's (`FILE:LINE:COL: PATH: MESSAGE (got VALUE)`).

use std::io::Write;
use std::path::{Path, PathBuf};

use layerzero::config::{ConfigError, ConfigSchema, LintWarning, SchemaError};

use crate::error::CliError;

/// `FILE:LINE:COL: PATH: MESSAGE (got VALUE); HINT`; the line and column are left out when
/// unknown, the path when the error is about the whole file.
pub(crate) fn format_error(file: &Path, error: &SchemaError) -> String {
    let mut out = location(file, error.position);
    if !error.path.is_empty() {
        out.push_str(&error.path);
        out.push_str(": ");
    }
    out.push_str(&error.message);
    if let Some(value) = &error.value {
        out.push_str(&format!(" (got {value})"));
    }
    if let Some(hint) = &error.hint {
        out.push_str("; ");
        out.push_str(hint);
    }
    out
}

fn format_warning(file: &Path, warning: &LintWarning) -> String {
    format!("{}warning: {}: {}", location(file, warning.position), warning.path, warning.message)
}

fn location(file: &Path, position: layerzero::config::Position) -> String {
    if position.is_known() {
        format!("{}:{}:{}: ", file.display(), position.line, position.column)
    } else {
        format!("{}: ", file.display())
    }
}

/// One file's verdict.
struct Report {
    file: PathBuf,
    errors: Vec<SchemaError>,
    warnings: Vec<LintWarning>,
}

pub(crate) fn validate(files: &[PathBuf], json: bool) -> Result<(), CliError> {
    let mut reports = Vec::new();
    for file in files {
        // An unreadable file is an I/O problem (exit 2), not an invalid one.
        let source = std::fs::read_to_string(file).map_err(|e| CliError::io(file, e))?;
        let (errors, warnings) = match ConfigSchema.load(&source) {
            Ok(loaded) => (Vec::new(), loaded.warnings),
            Err(ConfigError::Schema { errors }) => (errors, Vec::new()),
            Err(other) => (vec![schema_error(other)], Vec::new()),
        };
        reports.push(Report { file: file.clone(), errors, warnings });
    }
    let mut out = std::io::stdout().lock();
    if json {
        let files: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "file": r.file.display().to_string(),
                    "valid": r.errors.is_empty(),
                    "errors": r.errors.iter().map(|e| serde_json::json!({
                        "path": e.path, "message": e.message, "value": e.value,
                        "line": e.position.line, "column": e.position.column, "hint": e.hint,
                    })).collect::<Vec<_>>(),
                    "warnings": r.warnings.iter().map(|w| serde_json::json!({
                        "path": w.path, "message": w.message,
                        "line": w.position.line, "column": w.position.column,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        crate::table::write_json(&mut out, &serde_json::json!({ "files": files }))?;
    } else {
        for report in &reports {
            for error in &report.errors {
                writeln!(out, "{}", format_error(&report.file, error))?;
            }
            for warning in &report.warnings {
                writeln!(out, "{}", format_warning(&report.file, warning))?;
            }
            let verdict = match (report.errors.len(), report.warnings.len()) {
                (0, 0) => "valid".to_owned(),
                (0, w) => format!("valid, {w} warning{}", plural(w)),
                (e, _) => format!("invalid, {e} error{}", plural(e)),
            };
            writeln!(out, "{}: {verdict}", report.file.display())?;
        }
    }
    if reports.iter().all(|r| r.errors.is_empty()) { Ok(()) } else { Err(CliError::Invalid(String::new())) }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn schema_error(error: ConfigError) -> SchemaError {
    // Every load error is a `Schema` one today; keep any other readable.
    SchemaError {
        path: String::new(),
        message: error.to_string(),
        value: None,
        position: layerzero::config::Position::default(),
        hint: None,
    }
}
