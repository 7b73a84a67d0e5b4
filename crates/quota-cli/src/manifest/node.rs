//! A parsed file as a tree of [`Node`]s that remember their line, whether it came from
//! YAML (saphyr's marked loader) or TOML (toml's `Spanned`), so every later error can
//! name the line and the field.

use super::ManifestError;
use serde::Deserialize;

/// A value and the line (1-based) it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; keys are strings (YAML scalar keys are turned into text).
    Map(Vec<(String, Node)>),
}

impl Value {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Errors while reading values, naming `file`, the node's line and the field path.
pub struct Reader<'a> {
    pub file: &'a str,
}

impl Reader<'_> {
    pub fn err(&self, line: usize, field: &str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_owned(),
            line,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn expected(&self, node: &Node, field: &str, what: &str) -> ManifestError {
        self.err(
            node.line,
            field,
            format!("expected {what}, found {}", node.value.kind()),
        )
    }

    pub fn map<'n>(
        &self,
        node: &'n Node,
        field: &str,
    ) -> Result<&'n [(String, Node)], ManifestError> {
        match &node.value {
            Value::Map(entries) => Ok(entries),
            _ => Err(self.expected(node, field, "a mapping")),
        }
    }

    pub fn seq<'n>(&self, node: &'n Node, field: &str) -> Result<&'n [Node], ManifestError> {
        match &node.value {
            Value::Seq(items) => Ok(items),
            _ => Err(self.expected(node, field, "a list")),
        }
    }

    /// A string; numbers and booleans are accepted and turned into text (YAML users write
    /// `description: 2024` and mean the text).
    pub fn string(&self, node: &Node, field: &str) -> Result<String, ManifestError> {
        match &node.value {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(i) => Ok(i.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.expected(node, field, "a string")),
        }
    }

    pub fn u64(&self, node: &Node, field: &str) -> Result<u64, ManifestError> {
        match &node.value {
            Value::Int(i) => u64::try_from(*i).map_err(|_| {
                self.err(
                    node.line,
                    field,
                    format!("{i} is negative; expected 0 or more"),
                )
            }),
            Value::Str(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| self.err(node.line, field, format!("`{s}` is not a whole number"))),
            _ => Err(self.expected(node, field, "a whole number")),
        }
    }

    pub fn f64(&self, node: &Node, field: &str) -> Result<f64, ManifestError> {
        match &node.value {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            Value::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| self.err(node.line, field, format!("`{s}` is not a number"))),
            _ => Err(self.expected(node, field, "a number")),
        }
    }

    pub fn bool(&self, node: &Node, field: &str) -> Result<bool, ManifestError> {
        match &node.value {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Value::Str(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(self.expected(node, field, "true or false")),
        }
    }

    /// Refuse entries of a mapping other than `allowed`, naming the first unknown one.
    pub fn only(
        &self,
        entries: &[(String, Node)],
        field: &str,
        allowed: &[&str],
    ) -> Result<(), ManifestError> {
        for (k, v) in entries {
            if !allowed.contains(&k.as_str()) {
                return Err(self.err(
                    v.line,
                    &join(field, k),
                    format!("unknown field; expected one of: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// The entry `key` of a mapping.
pub fn get<'n>(entries: &'n [(String, Node)], key: &str) -> Option<&'n Node> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// `parent.child`, or `child` at the top.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// Parse YAML text (the first document) into a tree.
pub fn parse_yaml(file: &str, text: &str) -> Result<Node, ManifestError> {
    use saphyr::{LoadableYamlNode, MarkedYaml};
    let docs = MarkedYaml::load_from_str(text).map_err(|e| ManifestError {
        file: file.to_owned(),
        line: e.marker().line(),
        field: String::new(),
        message: format!(
            "not valid YAML: {} (column {})",
            e.info(),
            e.marker().col() + 1
        ),
    })?;
    match docs.into_iter().next() {
        Some(doc) => Ok(from_yaml(doc)),
        None => Ok(Node {
            line: 1,
            value: Value::Null,
        }),
    }
}

fn from_yaml(node: saphyr::MarkedYaml<'_>) -> Node {
    use saphyr::{Scalar, YamlData};
    let line = node.span.start.line().max(1);
    let scalar = |s: Scalar<'_>| match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::Int(i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Str(s.into_owned()),
    };
    let value = match node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(text, _, _) => scalar(Scalar::parse_from_cow(text)),
        YamlData::Sequence(items) => Value::Seq(items.into_iter().map(from_yaml).collect()),
        YamlData::Mapping(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (key_text(from_yaml(k)), from_yaml(v)))
                .collect(),
        ),
        // Tags (CloudFormation's `!Ref`, `!GetAtt`...) appear in sections we ignore; keep
        // the tagged value.
        YamlData::Tagged(_, inner) => return from_yaml(*inner),
        YamlData::Alias(_) | YamlData::BadValue => Value::Null,
    };
    Node { line, value }
}

fn key_text(key: Node) -> String {
    match key.value {
        Value::Str(s) => s,
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Seq(_) | Value::Map(_) => "<complex key>".into(),
    }
}

/// A TOML value with its span, deserialised recursively.
struct TomlNode(toml::Spanned<TomlValue>);

enum TomlValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<TomlNode>),
    Map(Vec<(String, TomlNode)>),
}

impl<'de> Deserialize<'de> for TomlNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        toml::Spanned::<TomlValue>::deserialize(d).map(TomlNode)
    }
}

impl<'de> Deserialize<'de> for TomlValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TomlValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a TOML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<TomlValue, E> {
                Ok(TomlValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<TomlValue, E> {
                Ok(TomlValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TomlValue, E> {
                i64::try_from(v)
                    .map(TomlValue::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<TomlValue, E> {
                Ok(TomlValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<TomlValue, E> {
                Ok(TomlValue::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<TomlValue, E> {
                Ok(TomlValue::Str(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TomlValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<TomlNode>()? {
                    items.push(item);
                }
                Ok(TomlValue::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TomlValue, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, TomlNode>()? {
                    entries.push((k, v));
                }
                Ok(TomlValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// The root table of a TOML document (it has no span of its own).
struct TomlRoot(Vec<(String, TomlNode)>);

impl<'de> Deserialize<'de> for TomlRoot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match TomlValue::deserialize(d)? {
            TomlValue::Map(entries) => Ok(TomlRoot(entries)),
            _ => Err(serde::de::Error::custom("a TOML document is a table")),
        }
    }
}

/// Parse TOML text into a tree.
pub fn parse_toml(file: &str, text: &str) -> Result<Node, ManifestError> {
    let root: TomlRoot = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        ManifestError {
            file: file.to_owned(),
            line,
            field: String::new(),
            message: format!("not valid TOML: {}", e.message()),
        }
    })?;
    let lines = LineIndex::new(text);
    Ok(Node {
        line: 1,
        value: Value::Map(
            root.0
                .into_iter()
                .map(|(k, v)| (k, from_toml(v, &lines)))
                .collect(),
        ),
    })
}

fn from_toml(node: TomlNode, lines: &LineIndex) -> Node {
    let line = lines.line(node.0.span().start);
    let value = match node.0.into_inner() {
        TomlValue::Bool(b) => Value::Bool(b),
        TomlValue::Int(i) => Value::Int(i),
        TomlValue::Float(f) => Value::Float(f),
        TomlValue::Str(s) => Value::Str(s),
        TomlValue::Seq(items) => {
            Value::Seq(items.into_iter().map(|n| from_toml(n, lines)).collect())
        }
        TomlValue::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k, from_toml(v, lines)))
                .collect(),
        ),
    };
    Node { line, value }
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Byte offsets of line starts, to turn spans into line numbers quickly.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex(starts)
    }

    fn line(&self, byte: usize) -> usize {
        match self.0.binary_search(&byte) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: YAML nodes carry the line they start on; scalars get their YAML types.
    // Set-up: a small nested document. Pass: the lines and values below.
    #[test]
    fn yaml_lines() {
        let text = "a:\n  b: 3\n  c: [x, 'y']\nd: !Ref Thing\n";
        let root = parse_yaml("f", text).unwrap();
        let Value::Map(top) = &root.value else {
            panic!()
        };
        let a = get(top, "a").unwrap();
        let Value::Map(inner) = &a.value else {
            panic!()
        };
        let b = get(inner, "b").unwrap();
        assert_eq!((b.line, &b.value), (2, &Value::Int(3)));
        assert_eq!(get(inner, "c").unwrap().line, 3);
        assert_eq!(get(top, "d").unwrap().value, Value::Str("Thing".into()));
        let err = parse_yaml("f", "a: [\n").unwrap_err();
        assert!(err.line >= 1, "{err}");
    }

    // Property: TOML nodes carry their line too, inside arrays of tables.
    // Set-up: two [[plans]] tables. Pass: the second plan's limit is on line 5.
    #[test]
    fn toml_lines() {
        let text = "[[plans]]\nname = \"a\"\n[[plans]]\nname = \"b\"\nlimit = 7\n";
        let root = parse_toml("f", text).unwrap();
        let Value::Map(top) = &root.value else {
            panic!()
        };
        let Value::Seq(plans) = &get(top, "plans").unwrap().value else {
            panic!()
        };
        let Value::Map(second) = &plans[1].value else {
            panic!()
        };
        let limit = get(second, "limit").unwrap();
        assert_eq!((limit.line, &limit.value), (5, &Value::Int(7)));
        let err = parse_toml("f", "a = \n").unwrap_err();
        assert_eq!(err.line, 1);
    }
}
