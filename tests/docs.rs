//! The documentation keeps up with the code: docs/configuration.md lists
//! exactly the configuration fields of the schema (`jwksd::config::Config`),
//! no more, no fewer.
//!
//! The field list is read from the schema itself, through serde: a
//! deserializer that, instead of data, records the field names every struct
//! asks for, and walks into each field that is itself a struct (or an
//! optional struct, such as `tls.admin`). Adding a field to the schema
//! without documenting it, or documenting one that does not exist, fails
//! this test.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use jwksd::config::Config;

/// Why a walk stopped. Every walk ends in an error: the data is never
/// complete, only the field names matter.
#[derive(Debug)]
enum Stop {
    /// The struct at the target path named these fields.
    Fields(Vec<&'static str>),
    /// The value at the target path is not a struct: a leaf.
    Leaf,
    Other(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Stop::Other(msg.to_string())
    }
}

/// Deserializes the value at `path` (relative to where it stands): at the
/// end of the path it reports what is there; before it, it offers a map
/// holding only the next field of the path.
struct Walk<'a> {
    path: &'a [&'static str],
}

impl<'de> Deserializer<'de> for Walk<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop::Leaf)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.path.split_first() {
            None => Err(Stop::Fields(fields.to_vec())),
            Some((first, rest)) => visitor.visit_map(OneField {
                key: Some(first),
                rest,
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// A map with one entry: the next field on the path, whose value is walked
/// further.
struct OneField<'a> {
    key: Option<&'static str>,
    rest: &'a [&'static str],
}

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            None => Ok(None),
            Some(k) => seed
                .deserialize(de::value::StrDeserializer::<Stop>::new(k))
                .map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(Walk { path: self.rest })
    }
}

/// Every leaf field of the schema, as a dotted path (`jwks.cache_max_age`).
fn schema_fields() -> BTreeSet<String> {
    fn walk(path: &mut Vec<&'static str>, out: &mut BTreeSet<String>) {
        match Config::deserialize(Walk { path: &path[..] }) {
            Err(Stop::Fields(fields)) => {
                for f in fields {
                    path.push(f);
                    walk(path, out);
                    path.pop();
                }
            }
            Err(Stop::Leaf) => {
                out.insert(path.join("."));
            }
            Err(Stop::Other(e)) => panic!("walking {}: {e}", path.join(".")),
            Ok(_) => panic!("walking {}: a value came out of nothing", path.join(".")),
        }
    }
    let mut out = BTreeSet::new();
    walk(&mut Vec::new(), &mut out);
    out
}

/// The fields docs/configuration.md documents: the first cell of every
/// table row that holds a backquoted field name (`| `jwks.cache_max_age` |`).
fn documented_fields(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        })
        .collect()
}

#[test]
fn the_walk_finds_nested_and_optional_fields() {
    let fields = schema_fields();
    for f in [
        "keys_dir",
        "rotation.schedule",
        "rotation.every",
        "jwks.cache_max_age",
        "tls.admin.client_ca_file",
        "store.postgres",
        "log.format",
    ] {
        assert!(fields.contains(f), "{f} not found in {fields:?}");
    }
    assert!(!fields.contains("tls.admin"), "a struct is not a leaf");
}

#[test]
fn configuration_md_lists_exactly_the_schema_fields() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let documented = documented_fields(&doc);
    let schema = schema_fields();
    let missing: Vec<_> = schema.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&schema).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/configuration.md is out of step with src/config/schema.rs:\n  \
         fields of the schema it does not document: {missing:?}\n  \
         fields it documents that the schema does not have: {extra:?}\n\
         (one table row per field, starting with | `section.field` |)"
    );
}

/// Links between the documents lead somewhere: every relative link in
/// README.md, runbook.md and docs/*.md names a file that exists and, for a
/// Markdown file, a heading it has (GitHub's anchors).
#[test]
fn relative_links_between_the_documents_resolve() {
    use std::path::{Path, PathBuf};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    fn outside_code(text: &str) -> String {
        let mut out = String::new();
        let mut fenced = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            } else if !fenced {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
    fn anchor(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }
    fn anchors(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        outside_code(&text)
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| anchor(l.trim_start_matches('#')))
            .collect()
    }

    let mut docs: Vec<PathBuf> = vec![root.join("README.md"), root.join("runbook.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let mut broken = Vec::new();
    for doc in &docs {
        let text = outside_code(&std::fs::read_to_string(doc).expect("a document"));
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let link = &rest[..end];
            if link.contains("://") || link.starts_with("mailto:") || link.contains(' ') {
                continue;
            }
            let (file, frag) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("a folder").join(file)
            };
            let name = format!(
                "{}: {link}",
                doc.strip_prefix(root).unwrap_or(doc).display()
            );
            if !target.exists() {
                broken.push(format!("{name} (no such file)"));
                continue;
            }
            if !frag.is_empty()
                && target.extension().is_some_and(|e| e == "md")
                && !anchors(&target).iter().any(|a| a == frag)
            {
                broken.push(format!("{name} (no such heading)"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}
