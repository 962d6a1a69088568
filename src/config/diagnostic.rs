//! `Diagnostic` and `ConfigErrors`: what went wrong in a config, where (`FILE:LINE:COL`, or the
//! environment variable that supplied the value), with an optional source snippet.

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

    /// Attach the source line under a file position.
    pub fn with_source(mut self, source: &str) -> Self {
        if let Origin::File { line, column, .. } = &self.origin
            && let Some(text) = source.lines().nth(line.saturating_sub(1))
        {
            let gutter = line.to_string();
            let pad = " ".repeat(gutter.len());
            self.snippet = Some(format!(
                "{pad} |\n{gutter} | {text}\n{pad} | {}^",
                " ".repeat(column.saturating_sub(1))
            ));
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

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

    /// The report with snippets, as `herald check` prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            out.push_str(&d.to_string());
            out.push('\n');
            if let Some(s) = &d.snippet {
                out.push_str(s);
                out.push('\n');
            }
        }
        let n = self.diagnostics.len();
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
