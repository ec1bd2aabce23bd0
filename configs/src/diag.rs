//! Diagnostics: what is wrong with a config, and exactly where.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A position in a config source: the file (or a name such as `kernel cmdline`),
/// line and column, both counted from 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Origin {
    pub source: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl Origin {
    pub fn new(source: &Arc<str>, line: usize, column: usize) -> Self {
        Origin {
            source: Arc::clone(source),
            line,
            column,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.source, self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something the user should know, e.g. that a `rancher:` section was translated.
    Note,
    /// Accepted, but not everything will happen as written (unsupported keys).
    Warning,
    /// The document is rejected.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding about a config document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where the offending value is; `None` only for findings about a whole source
    /// that could not be read at all.
    pub origin: Option<Origin>,
    /// Dotted path of the key, e.g. `berth.services.web.depends_on`; empty for the document.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn new(
        severity: Severity,
        origin: Option<Origin>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            origin,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn error(
        origin: Option<Origin>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, origin, path, message)
    }

    pub fn warning(
        origin: Option<Origin>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, origin, path, message)
    }

    pub fn note(
        origin: Option<Origin>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Note, origin, path, message)
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{}: ", self.severity)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// True when any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// Each error rendered as a line (`source:line:col: error: path: message`),
/// warnings and notes left out.
pub fn error_messages(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect()
}

/// The closest candidate to `word`, when one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["hostname", "runcmd", "bootcmd", "write_files"];
        assert_eq!(did_you_mean("hostnme", keys), Some("hostname"));
        assert_eq!(did_you_mean("writefiles", keys), Some("write_files"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn display_names_file_line_column() {
        let src: Arc<str> = Arc::from("user-data");
        let d = Diagnostic::error(Some(Origin::new(&src, 3, 5)), "hostname", "bad");
        assert_eq!(d.to_string(), "user-data:3:5: error: hostname: bad");
    }

    #[test]
    fn error_messages_leave_out_warnings_and_notes() {
        let src: Arc<str> = Arc::from("user-data");
        let diagnostics = [
            Diagnostic::warning(Some(Origin::new(&src, 1, 1)), "runcmd", "odd"),
            Diagnostic::error(Some(Origin::new(&src, 2, 3)), "hostname", "bad"),
            Diagnostic::note(None, "", "by the way"),
        ];
        assert_eq!(
            error_messages(&diagnostics),
            ["user-data:2:3: error: hostname: bad"]
        );
    }
}
