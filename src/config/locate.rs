//! Pointing errors at the line of the field they concern.

use std::fmt;

use super::error::ConfigError;

/// A configuration file's text, kept to point errors at lines.
pub(super) struct Text<'a> {
    pub(super) name: String,
    pub(super) yaml: &'a str,
}

impl Text<'_> {
    pub(super) fn error(&self, path: &[&str], message: impl fmt::Display) -> ConfigError {
        let at = locate(self.yaml, path)
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        ConfigError::Invalid {
            source_name: self.name.clone(),
            message: format!("{}{at}: {message}", path.join(".")),
        }
    }
}

/// The 1-based line of a nested key in simple block YAML, if found.
fn locate(yaml: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (i, line) in yaml.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        stack.push((indent, key.trim().trim_matches('"')));
        if stack.len() == path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p) {
            return Some(i + 1);
        }
    }
    None
}
