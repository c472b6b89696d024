//! Structured log lines on standard error, one event a line in logfmt (`time=... level=... msg="..." key=value`),
//! which journald keeps as is and log tools parse. Events carry their details as `log` key-values:
//! `log::info!(camera = name; "caption published")`.

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Result, bail};
use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Overrides the configuration file's `log_level`.
pub const LEVEL_VARIABLE: &str = "CAPDEC_LOG";

/// Installs the logger. The level is `$CAPDEC_LOG` when set, else `configured`.
pub fn init(configured: LevelFilter) -> Result<()> {
    let filter = match std::env::var(LEVEL_VARIABLE) {
        Ok(level) => match level.parse::<LevelFilter>() {
            Ok(filter) => filter,
            Err(_) => bail!(
                "{LEVEL_VARIABLE}=`{level}` is not one of off, error, warn, info, debug, trace"
            ),
        },
        Err(_) => configured,
    };
    log::set_boxed_logger(Box::new(Logger { filter }))
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    log::set_max_level(filter);
    Ok(())
}

struct Logger {
    filter: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Libraries (the MQTT client, the HTTP client) chatter at debug; their warnings matter, the rest only
        // when tracing.
        let ours = metadata.target().starts_with(env!("CARGO_CRATE_NAME"));
        metadata.level() <= self.filter
            && (ours || metadata.level() <= Level::Warn || self.filter == LevelFilter::Trace)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = format!(
            "time={} level={} msg={}",
            humantime::format_rfc3339_millis(SystemTime::now()),
            record.level().as_str().to_ascii_lowercase(),
            quoted(&record.args().to_string())
        );
        if !record.target().starts_with(env!("CARGO_CRATE_NAME")) {
            line.push_str(&format!(" target={}", quoted(record.target())));
        }
        let mut fields = Fields(&mut line);
        // A field that fails to format is left out; the event itself still gets logged.
        let _ = record.key_values().visit(&mut fields);
        line.push('\n');
        // Nowhere to report a failing standard error to.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

struct Fields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0
            .push_str(&format!(" {}={}", key.as_str(), quoted(&value.to_string())));
        Ok(())
    }
}

/// Bare when it is one plain word, else double-quoted with `"`, `\` and every control character escaped, so
/// that a line is always one event and a terminal shows it as it is (a NUL or an escape sequence from a
/// payload or a file name is written as `\u{0}`, `\u{1b}`).
fn quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quoted("porch"), "porch");
        assert_eq!(quoted("a cat on a mat."), "\"a cat on a mat.\"");
        assert_eq!(quoted("say \"hi\"\nnow"), "\"say \\\"hi\\\"\\nnow\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("k=v"), "\"k=v\"");
        assert_eq!(quoted("a\0b\u{1b}[2J\t"), "\"a\\u{0}b\\u{1b}[2J\\t\"");
    }
}
