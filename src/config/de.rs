//! Reading the schema's structs out of parsed YAML, with errors that speak
//! the configuration's language: each names the field as a path (data, not
//! text: the caller turns it into the field's line), what was found, what is
//! expected and an example, never a Rust type.
//!
//! The YAML is parsed into a [`serde_yaml::Value`] first (syntax errors and
//! hostile documents are serde_yaml's to refuse); this deserializer then
//! walks that value. It knows at each step which kind of value the schema
//! asks for (a whole number, text, a list, a section, one of a few words),
//! so a value of the wrong kind is described from that, not from serde's
//! "invalid type: ..., expected u32".
//!
//! One file, over 500 lines: a serde `Deserializer` is one trait of some
//! thirty methods over one value walker, and its error type; split, the
//! parts would only call each other.

use std::fmt;
use std::net::SocketAddr;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_yaml::Value;

/// One step of a path into the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Segment {
    Key(String),
    Index(usize),
}

/// What the schema asks for where a value of another kind was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Want {
    WholeNumber {
        max: u64,
    },
    Number,
    Bool,
    /// Text; the words say which (a duration, a path, ...).
    Text(String),
    List,
    Section,
    OneOf(&'static [&'static str]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Problem {
    /// A value of another kind than the schema's; `found` in words.
    Kind { want: Want, found: String },
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    /// A setting the section cannot do without.
    Missing(&'static str),
    /// What a field's own parser said (a duration, an address...).
    Message(String),
}

/// A value the schema refuses, at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Error {
    /// Outermost first.
    pub(super) path: Vec<Segment>,
    pub(super) problem: Problem,
}

impl Error {
    fn new(problem: Problem) -> Error {
        Error {
            path: Vec::new(),
            problem,
        }
    }

    fn kind(want: Want, found: &Value) -> Error {
        Error::new(Problem::Kind {
            want,
            found: describe(found),
        })
    }

    fn within(mut self, segment: Segment) -> Error {
        self.path.insert(0, segment);
        self
    }

    /// The keys of the path, for finding the line (list indexes are on the
    /// list's line or below it).
    pub(super) fn keys(&self) -> Vec<&str> {
        self.path
            .iter()
            .filter_map(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            })
            .collect()
    }

    /// The path as written in messages: `admin.allow[0]`.
    pub(super) fn field(&self) -> String {
        let mut out = String::new();
        for s in &self.path {
            match s {
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// What is wrong, in words, with an example; `example` is the field as
    /// the built-in configuration writes it, when it does.
    pub(super) fn message(&self, example: Option<&str>) -> String {
        let key = self.keys().last().copied().unwrap_or("").to_owned();
        // An empty default (`allow: []`) shows nothing worth copying.
        let example = example
            .filter(|e| {
                !e.split_once(':')
                    .is_some_and(|(_, v)| matches!(v.trim(), "[]" | "{}" | "\"\"" | "''"))
            })
            .map(|e| format!("`{e}`"))
            .or_else(|| self.fallback_example(&key));
        let for_example = example
            .map(|e| format!(", for example {e}"))
            .unwrap_or_default();
        match &self.problem {
            Problem::Kind { want, found } => {
                format!("expected {}{for_example}, not {found}", want.words())
            }
            Problem::UnknownField { field, expected } => {
                let mut m = format!("unknown setting {field:?}");
                if let Some(near) = nearest(field, expected) {
                    m.push_str(&format!(": did you mean {near:?}?"));
                }
                if expected.is_empty() {
                    m.push_str(" (this section takes no settings)");
                } else {
                    m.push_str(&format!(" (this section takes {})", or_list(expected)));
                }
                m
            }
            Problem::UnknownVariant { variant, expected } => {
                format!(
                    "{variant:?} is not accepted: expected {}{for_example}",
                    or_list(expected)
                )
            }
            Problem::Missing(field) => {
                let example = self
                    .fallback_example(field)
                    .map(|e| format!(", for example {e}"))
                    .unwrap_or_default();
                format!("{field} is missing: this section needs it{example}")
            }
            Problem::Message(m) => m.clone(),
        }
    }

    fn fallback_example(&self, key: &str) -> Option<String> {
        let value = match &self.problem {
            Problem::Missing(_) => match key {
                "cert_file" => "/etc/jwksd/tls/cert.pem".to_owned(),
                "key_file" => "/etc/jwksd/tls/key.pem".to_owned(),
                _ => return None,
            },
            Problem::Kind { want, .. } => match want {
                Want::WholeNumber { .. } | Want::Number => "100".to_owned(),
                Want::Bool => "true".to_owned(),
                Want::Text(_) => match key {
                    "cert_file" => "/etc/jwksd/tls/cert.pem".to_owned(),
                    "key_file" => "/etc/jwksd/tls/key.pem".to_owned(),
                    "client_ca_file" => "/etc/jwksd/tls/clients-ca.pem".to_owned(),
                    "postgres" => "\"host=db.internal dbname=jwksd user=jwksd\"".to_owned(),
                    _ => return None,
                },
                Want::List if key == "allow" => "[10.0.0.0/8, 127.0.0.1/32]".to_owned(),
                Want::List => "[a, b]".to_owned(),
                Want::Section if key.is_empty() => return Some("`keys_dir: keys`".into()),
                Want::Section => return Some(format!("`{key}:` followed by indented settings")),
                Want::OneOf(v) => v.first()?.to_string(),
            },
            Problem::UnknownVariant { expected, .. } => expected.first()?.to_string(),
            _ => return None,
        };
        Some(format!("`{key}: {value}`"))
    }
}

impl Want {
    fn words(&self) -> String {
        match self {
            Want::WholeNumber { max } if *max < u64::from(u32::MAX) => {
                format!("a whole number from 0 to {max}")
            }
            Want::WholeNumber { .. } => "a whole number (0 or more)".into(),
            Want::Number => "a number".into(),
            Want::Bool => "true or false".into(),
            Want::Text(what) => what.clone(),
            Want::List => "a list".into(),
            Want::Section => "a section of settings (indented `name: value` lines)".into(),
            Want::OneOf(v) => or_list(v),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.message(None))
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(Problem::Message(msg.to_string()))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error::new(Problem::UnknownField {
            field: field.to_owned(),
            expected,
        })
        .within(Segment::Key(field.to_owned()))
    }

    fn missing_field(field: &'static str) -> Self {
        Error::new(Problem::Missing(field))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error::new(Problem::UnknownVariant {
            variant: variant.to_owned(),
            expected,
        })
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::new(Problem::Kind {
            want: Want::Text(plain(&exp.to_string())),
            found: unexpected(unexp),
        })
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::new(Problem::Message(format!(
            "expected {}, not {}",
            plain(&exp.to_string()),
            unexpected(unexp)
        )))
    }
}

/// "a, b or c", each quoted as written in YAML.
fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// serde's own words for what a visitor expects, made plain.
fn plain(expected: &str) -> String {
    match expected {
        "a string" | "string" | "a borrowed string" | "path string" => "text".into(),
        "IPv4 or IPv6 network address" | "IPv4 network address" | "IPv6 network address" => {
            "a network in CIDR notation (address/prefix length), like 10.0.0.0/8 or \
             127.0.0.1/32"
                .into()
        }
        other => other.to_owned(),
    }
}

fn unexpected(u: de::Unexpected<'_>) -> String {
    use de::Unexpected as U;
    match u {
        U::Bool(b) => format!("{b}"),
        U::Unsigned(n) => format!("the number {n}"),
        U::Signed(n) => format!("the number {n}"),
        U::Float(n) => format!("the number {n}"),
        U::Str(s) => format!("{s:?}"),
        U::Unit | U::Option => "nothing".into(),
        U::Seq => "a list".into(),
        U::Map => "a section".into(),
        _ => "a value of another kind".into(),
    }
}

/// A YAML value in words, for "not ...".
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "an empty value".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        // A connection string pasted in the wrong place may hold a
        // password: never repeat one.
        Value::String(s) if looks_secret(s) => "a text that looks like a connection string \
                                                 (not repeated here: it may hold a password)"
            .into(),
        Value::String(s) => format!("the text {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a section (`name: value` lines)".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Whether a text may carry a credential (`user:password@` in a URL, or a
/// `password=` setting).
fn looks_secret(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.contains("password")
        || s.split_once("://")
            .is_some_and(|(_, rest)| rest.contains('@'))
}

/// Deserializes `T` from `value`; errors carry their path.
pub(super) fn from_value<'de, T: de::Deserialize<'de>>(value: &'de Value) -> Result<T, Error> {
    T::deserialize(ValueDe(value))
}

struct ValueDe<'a>(&'a Value);

impl<'a> ValueDe<'a> {
    fn unsigned(&self, max: u64) -> Result<u64, Error> {
        match self.0 {
            Value::Number(n) => match n.as_u64() {
                Some(v) if v <= max => Ok(v),
                _ => Err(Error::kind(Want::WholeNumber { max }, self.0)),
            },
            other => Err(Error::kind(Want::WholeNumber { max }, other)),
        }
    }

    fn signed(&self) -> Result<i64, Error> {
        match self.0 {
            Value::Number(n) => n.as_i64().ok_or_else(|| Error::kind(Want::Number, self.0)),
            other => Err(Error::kind(Want::Number, other)),
        }
    }

    /// The value as text. A number where a duration or an address is asked
    /// for is read as text, so that `90` is told it lacks a unit and `8081`
    /// that it is no IP:port (no number is a valid one); anywhere else an
    /// unquoted number or true/false is refused: YAML has already turned
    /// it into a value whose spelling may differ from what was written
    /// (`0x1F` is 31, `1.10` is 1.1), and a changed issuer, audience or
    /// path must not pass unnoticed.
    fn text<'de, V: Visitor<'de>>(&self, visitor: &V) -> Result<String, Error> {
        let wanted = expecting(visitor);
        // Parsed further, and never valid as a bare number.
        let parsed = wanted.contains("duration") || wanted.contains("address");
        match self.0 {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) if parsed => Ok(n.to_string()),
            Value::Number(_) | Value::Bool(_) => Err(Error::new(Problem::Message(format!(
                "expected {}, written in quotes: YAML reads this unquoted value as {}, whose \
                 spelling may not be what was written",
                plain(&wanted),
                describe(self.0)
            )))),
            other => Err(Error::kind(Want::Text(plain(&wanted)), other)),
        }
    }
}

fn expecting<'de, V: Visitor<'de>>(v: &V) -> String {
    struct E<'v, V>(&'v V);
    impl<'de, V: Visitor<'de>> fmt::Display for E<'_, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
    }
    E(v).to_string()
}

macro_rules! unsigned {
    ($($method:ident $visit:ident $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let n = self.unsigned(<$t>::MAX as u64)?;
            visitor.$visit(n as $t)
        }
    )*};
}

macro_rules! signed {
    ($($method:ident $visit:ident $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let n = self.signed()?;
            let n = <$t>::try_from(n).map_err(|_| Error::kind(Want::Number, self.0))?;
            visitor.$visit(n)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_str(s),
            Value::Sequence(_) => self.deserialize_seq(visitor),
            Value::Mapping(_) => self.deserialize_map(visitor),
            Value::Tagged(t) => Err(Error::new(Problem::Message(format!(
                "YAML tags ({}) are not used in a jwksd configuration: remove it",
                t.tag
            )))),
        }
    }

    unsigned!(deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16,
              deserialize_u32 visit_u32 u32, deserialize_u64 visit_u64 u64);
    signed!(deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16,
            deserialize_i32 visit_i32 i32, deserialize_i64 visit_i64 i64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Number(n) => match n.as_f64() {
                Some(f) => visitor.visit_f64(f),
                None => Err(Error::kind(Want::Number, self.0)),
            },
            other => Err(Error::kind(Want::Number, other)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(*b),
            other => Err(Error::kind(Want::Bool, other)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let want = plain(&expecting(&visitor));
        let text = self.text(&visitor)?;
        let parsed = match self.0 {
            Value::String(s) => visitor.visit_borrowed_str(s),
            _ => visitor.visit_string(text.clone()),
        };
        // A parser's bare complaint ("invalid IP address syntax") gets the
        // value and what is expected.
        parsed.map_err(|e: Error| match e.problem {
            Problem::Message(m) if !m.contains(&format!("{text:?}")) => Error {
                problem: Problem::Message(format!("{text:?}: {m}: expected {want}")),
                ..e
            },
            _ => e,
        })
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        const NONE: &[Value] = &[];
        match self.0 {
            Value::Sequence(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
            }),
            // A list setting left empty (every entry commented out) is an
            // empty list, as it always was.
            Value::Null => visitor.visit_seq(Seq {
                items: NONE.iter(),
                index: 0,
            }),
            other => Err(Error::kind(Want::List, other)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        static EMPTY: std::sync::OnceLock<serde_yaml::Mapping> = std::sync::OnceLock::new();
        match self.0 {
            Value::Mapping(m) => visitor.visit_map(Map {
                entries: m.iter(),
                key: None,
            }),
            // A section whose settings are all commented out.
            Value::Null => visitor.visit_map(Map {
                entries: EMPTY.get_or_init(serde_yaml::Mapping::new).iter(),
                key: None,
            }),
            other => Err(Error::kind(Want::Section, other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => Err(Error::kind(Want::OneOf(variants), other)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            other => Err(Error::kind(Want::Text("nothing".into()), other)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Value>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for Seq<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(ValueDe(item))
            .map(Some)
            .map_err(|e| e.within(Segment::Index(index)))
    }
}

struct Map<'a> {
    entries: serde_yaml::mapping::Iter<'a>,
    key: Option<(String, &'a Value)>,
}

impl<'de> de::MapAccess<'de> for Map<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        let name = match k {
            Value::String(s) => s.clone(),
            other => {
                return Err(Error::new(Problem::Message(format!(
                    "setting names are words, not {}",
                    describe(other)
                ))));
            }
        };
        self.key = Some((name.clone(), v));
        // An unknown name's error carries its path already.
        seed.deserialize(name.as_str().into_deserializer())
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((name, value)) = self.key.take() else {
            return Err(Error::new(Problem::Message(
                "a value without a setting name".into(),
            )));
        };
        seed.deserialize(ValueDe(value))
            .map_err(|e| e.within(Segment::Key(name)))
    }
}

/// An `IP:port` listen address; a host name is refused with what to write
/// instead (jwksd binds exactly the address it is given).
pub(super) fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an IP address and port, like 127.0.0.1:8080 or [::1]:8080")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            v.parse().map_err(|_| {
                let hint = if v.rsplit_once(':').is_some_and(|(host, port)| {
                    host.parse::<std::net::IpAddr>().is_err()
                        && !host.is_empty()
                        && port.parse::<u16>().is_ok()
                }) {
                    " (host names are not accepted: jwksd listens on exactly the address given; \
                     use 127.0.0.1 for loopback, 0.0.0.0 or [::] for every interface)"
                } else {
                    ""
                };
                E::custom(format!(
                    "{v:?} is not an IP address and port: expected IP:port, for example \
                     127.0.0.1:8080 or [::1]:8080{hint}"
                ))
            })
        }
    }
    d.deserialize_str(V)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        #[serde(default)]
        flag: bool,
        #[serde(default)]
        n: u32,
    }

    fn err(yaml: &str) -> Error {
        let v: Value = serde_yaml::from_str(yaml).unwrap();
        from_value::<Probe>(&v).unwrap_err()
    }

    #[test]
    fn kinds_are_named_in_words_with_the_path() {
        let e = err("flag: 3\n");
        assert_eq!(e.field(), "flag");
        assert_eq!(
            e.message(None),
            "expected true or false, for example `flag: true`, not the number 3"
        );
        let e = err("n: -1\n");
        assert_eq!(
            e.message(Some("n: 7")),
            "expected a whole number (0 or more), for example `n: 7`, not the number -1"
        );
        let e = err("nn: 1\n");
        assert_eq!(e.field(), "nn");
        assert_eq!(
            e.message(None),
            "unknown setting \"nn\": did you mean \"n\"? (this section takes flag or n)"
        );
    }

    #[test]
    fn nearest_needs_a_plausible_typo() {
        assert_eq!(
            nearest("cache_max_ag", &["cache_max_age", "publish_ahead"]),
            Some("cache_max_age")
        );
        assert_eq!(nearest("zzz", &["cache_max_age", "publish_ahead"]), None);
    }
}
