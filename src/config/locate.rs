//! Pointing errors at the line of the field they concern.

use std::fmt;

use super::error::ConfigError;

/// A configuration file's text, kept to point errors at lines.
pub(super) struct Text<'a> {
    pub(super) name: String,
    pub(super) yaml: &'a str,
}

impl Text<'_> {
    /// An error about the field at `path` (its keys): `field (line N):
    /// message`, the line given once.
    pub(super) fn error(&self, path: &[&str], message: impl fmt::Display) -> ConfigError {
        self.error_named(&path.join("."), path, message)
    }

    /// As [`Text::error`], the field written as `field` (which may hold list
    /// indexes the key path leaves out).
    pub(super) fn error_named(
        &self,
        field: &str,
        path: &[&str],
        message: impl fmt::Display,
    ) -> ConfigError {
        let at = locate(self.yaml, path)
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        let field = if field.is_empty() {
            "the configuration"
        } else {
            field
        };
        ConfigError::Invalid {
            source_name: self.name.clone(),
            message: format!("{field}{at}: {message}"),
        }
    }

    /// A YAML syntax error, its positions taken out of serde_yaml's text and
    /// placed once, in front.
    pub(super) fn syntax_error(&self, e: &serde_yaml::Error) -> ConfigError {
        // libyaml's words for YAML's kinds, in the ones messages use.
        let mut text = strip_marks(&e.to_string());
        for (word, plain) in [
            (
                "mapping values are not allowed in this context",
                "a `name: value` is not allowed here (check the indentation, or quote a value \
                 that holds \": \")",
            ),
            ("flow mapping", "{...} section"),
            ("block mapping", "section"),
            ("mapping", "section"),
            ("flow sequence", "[...] list"),
            ("block sequence", "list"),
            ("sequence", "list"),
        ] {
            text = text.replace(word, plain);
        }
        let message = match e.location() {
            Some(l) => format!(
                "line {} column {}: not valid YAML: {text}",
                l.line(),
                l.column()
            ),
            None => format!("not valid YAML: {text}"),
        };
        ConfigError::Invalid {
            source_name: self.name.clone(),
            message,
        }
    }
}

/// `text` without serde_yaml's " at line L column C" and " at position P".
fn strip_marks(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(" at ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        let skipped = skip_mark(after);
        match skipped {
            Some(tail) => rest = tail,
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// After "line L column C" or "position P", the rest of `s`.
fn skip_mark(s: &str) -> Option<&str> {
    fn number(s: &str) -> Option<&str> {
        let n = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        (n > 0).then(|| &s[n..])
    }
    if let Some(s) = s.strip_prefix("line ") {
        number(s)?.strip_prefix(" column ").and_then(number)
    } else {
        s.strip_prefix("position ").and_then(number)
    }
}

/// The 1-based line of a nested key in simple block YAML: the key itself
/// if found, else the deepest of its parents found (a key inside a flow
/// mapping is on its parent's line).
pub(super) fn locate(yaml: &str, path: &[&str]) -> Option<usize> {
    if path.is_empty() {
        // The document itself: its first line that is not a comment.
        return yaml
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|i| i + 1);
    }
    let mut best: Option<(usize, usize)> = None;
    for (stack, i) in key_lines(yaml, false) {
        let matched = stack.iter().zip(path).take_while(|(k, p)| k == p).count();
        if matched == stack.len() && matched > best.map_or(0, |(m, _)| m) {
            best = Some((matched, i));
            if matched == path.len() {
                break;
            }
        }
    }
    best.map(|(_, i)| i)
}

/// The line that sets `path` in `yaml`, trimmed, commented-out lines
/// included (the built-in configuration shows optional settings so): the
/// example error messages give.
pub(super) fn example(yaml: &str, path: &[&str]) -> Option<String> {
    key_lines(yaml, true)
        .into_iter()
        .find(|(stack, _)| stack.len() == path.len() && stack.iter().zip(path).all(|(k, p)| k == p))
        .and_then(|(_, i)| yaml.lines().nth(i - 1))
        .map(|l| l.trim_start().trim_start_matches('#').trim().to_owned())
        .filter(|l| l.split_once(':').is_some_and(|(_, v)| !v.trim().is_empty()))
}

/// Each key line's path (its keys from the top) and 1-based line number.
fn key_lines(yaml: &str, commented: bool) -> Vec<(Vec<String>, usize)> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    for (i, line) in yaml.lines().enumerate() {
        let mut trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if commented && let Some(c) = trimmed.strip_prefix("# ") {
            // `# name: value` at the indentation of its section's keys.
            if c.starts_with(' ') || !c.split_once(':').is_some_and(|(k, _)| is_key(k)) {
                continue;
            }
            trimmed = c;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        stack.push((indent, key.trim().trim_matches('"').to_owned()));
        out.push((stack.iter().map(|(_, k)| k.clone()).collect(), i + 1));
    }
    out
}

fn is_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_examples() {
        let y = "a:\n  b: 1\n  # c: 2\nd: {e: 3}\n";
        assert_eq!(locate(y, &["a", "b"]), Some(2));
        assert_eq!(locate(y, &["d", "e"]), Some(4));
        assert_eq!(locate(y, &["a", "c"]), Some(1));
        assert_eq!(example(y, &["a", "c"]).as_deref(), Some("c: 2"));
        assert_eq!(example(y, &["a"]), None);
        assert_eq!(
            strip_marks(
                "did not find expected key at line 3 column 5, while parsing a block mapping at line 1 column 1"
            ),
            "did not find expected key, while parsing a block mapping"
        );
    }
}
