//! `Diagnostic` and `ConfigErrors`: what went wrong in a config, where (`FILE:LINE:COL`, or the
//! environment variable that supplied the value), with an optional source snippet; the
//! report `herald check` prints, capped at `REPORT_LIMIT` problems.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A position in the config file (line and column are 1-based).
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    /// An environment variable overriding a key (`HERALD_HTTP__LISTEN`).
    Env(String),
    /// The file as a whole (no finer position known).
    Whole(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Whole(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: Origin,
    pub message: String,
    /// Source lines around the position, with a caret, when known.
    pub snippet: Option<String>,
}

impl Diagnostic {
    pub fn new(origin: Origin, message: impl Into<String>) -> Self {
        Diagnostic {
            origin,
            message: message.into(),
            snippet: None,
        }
    }

    /// Attach the source line under a file position. Scans `source` once; where many
    /// diagnostics share a text, build a `LineIndex` and use `with_snippet`.
    pub fn with_source(self, source: &str) -> Self {
        self.with_snippet(&LineIndex::new(source), source)
    }

    /// Attach the source line under a file position, found through `lines` (the index of
    /// `source`) without scanning the text. Long lines show a window around the column.
    pub fn with_snippet(mut self, lines: &LineIndex, source: &str) -> Self {
        if let Origin::File { line, column, .. } = &self.origin
            && let Some((text, caret)) = lines.window(source, *line, *column)
        {
            let gutter = line.to_string();
            let pad = " ".repeat(gutter.len());
            self.snippet = Some(format!(
                "{pad} |\n{gutter} | {text}\n{pad} | {}^",
                " ".repeat(caret)
            ));
        }
        self
    }
}

/// Longest source line a snippet shows whole; longer lines show a window around the column.
const SNIPPET_WIDTH: usize = 120;

/// Where each line of a text starts, built once per file, so that finding the line of one
/// diagnostic costs no scan of the text: validation stays linear however many errors a file
/// has.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    /// Byte offset of each line's start, and whether the line is ASCII (then columns are
    /// byte offsets, and a window can be cut without walking the line).
    lines: Vec<(usize, bool)>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut lines = Vec::new();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            lines.push((start, line.is_ascii()));
            start += line.len();
        }
        LineIndex { lines }
    }

    /// Line `line` (1-based) of `text`, without its line break.
    pub fn line<'t>(&self, text: &'t str, line: usize) -> Option<&'t str> {
        let i = line.checked_sub(1)?;
        let &(start, _) = self.lines.get(i)?;
        let end = self.lines.get(i + 1).map_or(text.len(), |&(next, _)| next);
        let raw = text.get(start..end)?;
        Some(raw.trim_end_matches(['\n', '\r']))
    }

    /// The text of `line` to show under a diagnostic at `column` (1-based), and the caret's
    /// offset in it. Lines up to `SNIPPET_WIDTH` are shown whole; a longer ASCII line shows
    /// a window around the column; a longer non-ASCII line is not shown.
    fn window(&self, text: &str, line: usize, column: usize) -> Option<(String, usize)> {
        let body = self.line(text, line)?;
        let caret = column.saturating_sub(1);
        if body.len() <= SNIPPET_WIDTH {
            return Some((body.to_string(), caret));
        }
        let ascii = self.lines.get(line - 1).is_some_and(|&(_, a)| a);
        if !ascii {
            return None;
        }
        let half = SNIPPET_WIDTH / 2;
        let from = caret.saturating_sub(half).min(body.len());
        let to = (from + SNIPPET_WIDTH).min(body.len());
        let head = if from > 0 { "…" } else { "" };
        let tail = if to < body.len() { "…" } else { "" };
        Some((
            format!("{head}{}{tail}", &body[from..to]),
            caret - from + usize::from(from > 0),
        ))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Most problems `render` prints; the rest are counted in one line.
pub const REPORT_LIMIT: usize = 50;

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    pub fn one(d: Diagnostic) -> Self {
        ConfigErrors {
            diagnostics: vec![d],
        }
    }

    /// Collect `diagnostics` in file order (environment and whole-file problems last).
    pub fn new(mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by_key(|d| match &d.origin {
            Origin::File { line, column, .. } => (0, *line, *column),
            Origin::Env(_) => (1, 0, 0),
            Origin::Whole(_) => (2, 0, 0),
        });
        ConfigErrors { diagnostics }
    }

    /// A problem with the file as a whole (unreadable, empty, ...).
    pub fn whole(path: &Path, message: impl Into<String>) -> Self {
        Self::one(Diagnostic::new(Origin::Whole(path.to_path_buf()), message))
    }

    /// The report with snippets, as `herald check` prints it: the first `REPORT_LIMIT`
    /// problems, then `... and K more errors`, then the total.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in self.diagnostics.iter().take(REPORT_LIMIT) {
            out.push_str(&d.to_string());
            out.push('\n');
            if let Some(s) = &d.snippet {
                out.push_str(s);
                out.push('\n');
            }
        }
        let n = self.diagnostics.len();
        if n > REPORT_LIMIT {
            let more = n - REPORT_LIMIT;
            out.push_str(&format!(
                "... and {more} more error{}\n",
                if more == 1 { "" } else { "s" }
            ));
        }
        out.push_str(&format!(
            "{n} error{} found\n",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.diagnostics.iter().map(|d| d.to_string()).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Origin {
        Origin::File {
            path: "f.yaml".into(),
            line,
            column,
        }
    }

    #[test]
    fn render_caps_the_report() {
        let many: Vec<Diagnostic> = (1..=53)
            .map(|i| Diagnostic::new(at(i, 1), format!("problem {i}")))
            .collect();
        let report = ConfigErrors::new(many).render();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), REPORT_LIMIT + 2, "{report}");
        assert_eq!(lines[0], "f.yaml:1:1: problem 1");
        assert_eq!(lines[49], "f.yaml:50:1: problem 50");
        assert_eq!(lines[50], "... and 3 more errors");
        assert_eq!(lines[51], "53 errors found");
        let few = ConfigErrors::new(vec![Diagnostic::new(at(1, 1), "one")]).render();
        assert_eq!(few, "f.yaml:1:1: one\n1 error found\n");
    }

    #[test]
    fn snippets_come_from_the_line_index() {
        let text = "a: 1\r\nb: [x\n";
        let lines = LineIndex::new(text);
        assert_eq!(lines.line(text, 1), Some("a: 1"));
        assert_eq!(lines.line(text, 2), Some("b: [x"));
        assert_eq!(lines.line(text, 3), None);
        assert_eq!(lines.line(text, 0), None);
        let d = Diagnostic::new(at(2, 4), "x").with_snippet(&lines, text);
        assert_eq!(d.snippet.as_deref(), Some("  |\n2 | b: [x\n  |    ^"));
    }

    #[test]
    fn a_long_line_shows_a_window_around_the_column() {
        let text = format!("{}X{}\n", "a".repeat(500), "b".repeat(500));
        let d = Diagnostic::new(at(1, 501), "x").with_source(&text);
        let snippet = d.snippet.unwrap();
        let shown: Vec<&str> = snippet.lines().collect();
        let code = shown[1].strip_prefix("1 | ").unwrap();
        let caret = shown[2].strip_prefix("  | ").unwrap();
        assert!(code.starts_with('…') && code.ends_with('…'), "{code}");
        assert!(code.chars().count() <= SNIPPET_WIDTH + 2, "{code}");
        // The caret sits under the X.
        let col = caret.chars().count() - 1;
        assert_eq!(code.chars().nth(col), Some('X'), "{snippet}");
        // A long line that is not ASCII gets no snippet rather than a scan.
        let text = format!("{}é\n", "a".repeat(500));
        assert!(
            Diagnostic::new(at(1, 3), "x")
                .with_source(&text)
                .snippet
                .is_none()
        );
    }
}
