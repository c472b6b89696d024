//! Errors that point into the TOML file they come from, one line each (toml's own rendering spans several):
//! `FILE:LINE: in [TABLE] key `KEY`: MESSAGE (line LINE: `TEXT`)`. The bundle manifest and the daemon's
//! configuration both report through it, so that every file a user edits is pointed at the same way.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

/// The file being read, to turn byte spans into `FILE:LINE` messages that quote the line.
pub(crate) struct TomlFile<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl TomlFile<'_> {
    /// The 1-based line a span starts on.
    pub fn line(&self, span: Range<usize>) -> usize {
        self.text.as_bytes()[..span.start.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error at a value; a default (an empty span, no place in the file) names the file only.
    pub fn at<T>(&self, value: &Spanned<T>, message: &str) -> anyhow::Error {
        let span = value.span();
        self.error((span != (0..0)).then_some(span), message)
    }

    /// An error about the file as a whole.
    pub fn anywhere(&self, message: &str) -> anyhow::Error {
        self.error(None, message)
    }

    /// A parse error from toml, located where toml says.
    pub fn parse_error(&self, error: &toml::de::Error, prefix: &str) -> anyhow::Error {
        self.error(error.span(), &format!("{prefix}{}", error.message().trim()))
    }

    /// The table and key come from the text around the span, since toml's messages name neither.
    fn error(&self, span: Option<Range<usize>>, message: &str) -> anyhow::Error {
        let path = self.path.display();
        let Some(span) = span else {
            return anyhow::anyhow!("{path}: {message}");
        };
        let line = self.line(span);
        let lines: Vec<&str> = self.text.lines().collect();
        let quoted = lines.get(line - 1).map(|l| l.trim()).unwrap_or_default();
        let table = lines[..line.min(lines.len())]
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| l.starts_with('['))
            .map(|header| format!(" in {}", header.split('#').next().unwrap_or(header).trim()))
            .unwrap_or_default();
        let key = quoted
            .split_once('=')
            .filter(|(key, _)| !key.starts_with('['))
            .map(|(key, _)| format!(" key `{}`", key.trim()))
            .unwrap_or_default();
        anyhow::anyhow!("{path}:{line}:{table}{key}: {message} (line {line}: `{quoted}`)")
    }
}
