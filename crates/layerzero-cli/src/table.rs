//! Text for people: aligned tables, and colour only when stdout is a terminal.

use std::io::IsTerminal;

/// Whether stdout gets ANSI colour: a terminal, and `NO_COLOR` unset.
pub(crate) fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// A status word, green or red when colour is on.
pub(crate) fn status(ok: bool, colour: bool) -> String {
    let word = if ok { "ok" } else { "FAIL" };
    match (colour, ok) {
        (false, _) => word.to_owned(),
        (true, true) => format!("\x1b[32m{word}\x1b[0m"),
        (true, false) => format!("\x1b[1;31m{word}\x1b[0m"),
    }
}

/// Rows of cells printed with each column padded to its widest cell (ANSI escapes do not
/// count towards the width).
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new<const N: usize>(header: [&str; N]) -> Table {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| visible_len(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(visible_len(cell));
                } else {
                    widths.push(visible_len(cell));
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(visible_len(cell)) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn visible_len(text: &str) -> usize {
    let mut len = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

/// Writes `value` as pretty JSON and a newline; a closed stdout is not an error.
pub(crate) fn write_json(
    out: &mut impl std::io::Write,
    value: &serde_json::Value,
) -> Result<(), crate::error::CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| match e.io_error_kind() {
        Some(kind) => crate::error::CliError::from(std::io::Error::from(kind)),
        None => crate::error::CliError::usage(e),
    })?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_ignoring_colour() {
        let mut table = Table::new(["op", "status"]);
        table.row(vec!["rms_norm".into(), status(true, true)]);
        table.row(vec!["rope".into(), status(false, false)]);
        let text = table.render();
        assert_eq!(text, "op        status\nrms_norm  \x1b[32mok\x1b[0m\nrope      FAIL\n");
    }
}
