//! YAML documents as a tree that remembers where every key and value was written.
//!
//! serde-saphyr parses the text (multi-document, anchors, merge keys, budgets against
//! alias bombs); its `Spanned` wrapper gives each node's line and column. The tree is
//! then turned into a `serde_json::Value` for the typed Kubernetes structs, and kept to
//! find the position of any field path named by a later check.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned};

/// A position in a file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

impl Pos {
    fn from_location(loc: serde_saphyr::Location) -> Pos {
        Pos {
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
            column: u32::try_from(loc.column()).unwrap_or(u32::MAX),
        }
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// The node itself.
    pub value: NodeValue,
}

/// The kinds of YAML node kommit reads (the JSON data model).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A floating point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in the written order; keys are strings (scalar keys are stringified,
    /// as Kubernetes' YAML reader does).
    Map(Vec<(Key, Node)>),
}

/// A mapping key and its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key as a string.
    pub name: String,
    /// Where the key is written.
    pub pos: Pos,
}

/// One element of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl From<&str> for PathSeg {
    fn from(k: &str) -> Self {
        PathSeg::Key(k.to_owned())
    }
}

impl From<String> for PathSeg {
    fn from(k: String) -> Self {
        PathSeg::Key(k)
    }
}

impl From<usize> for PathSeg {
    fn from(i: usize) -> Self {
        PathSeg::Index(i)
    }
}

/// Builds a field path (an array of [`PathSeg`]): `path!["spec", "containers", 0, "image"]`.
#[macro_export]
#[doc(hidden)]
macro_rules! path {
    ($($seg:expr),* $(,)?) => {
        [$($crate::yaml::PathSeg::from($seg)),*]
    };
}

/// Extends a path: `join(&base, path!["name"])`.
pub fn join(base: &[PathSeg], tail: impl IntoIterator<Item = PathSeg>) -> Vec<PathSeg> {
    let mut out = base.to_vec();
    out.extend(tail);
    out
}

/// A parse failure: what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it found.
    pub message: String,
}

impl Node {
    /// Looks a field path up; returns the node and, for a mapping entry, the key's position.
    pub fn lookup(&self, path: &[PathSeg]) -> Option<(&Node, Option<Pos>)> {
        let mut node = self;
        let mut key_pos = None;
        for seg in path {
            match (seg, &node.value) {
                (PathSeg::Key(k), NodeValue::Map(entries)) => {
                    let (key, value) = entries.iter().rev().find(|(key, _)| &key.name == k)?;
                    key_pos = Some(key.pos);
                    node = value;
                }
                (PathSeg::Index(i), NodeValue::Seq(items)) => {
                    node = items.get(*i)?;
                    key_pos = None;
                }
                _ => return None,
            }
        }
        Some((node, key_pos))
    }

    /// The best position for a path: the deepest node that exists on it.
    /// `prefer_key` picks the key's position over the value's for a mapping entry.
    pub fn position_of(&self, path: &[PathSeg], prefer_key: bool) -> Pos {
        for len in (0..=path.len()).rev() {
            if let Some((node, key_pos)) = self.lookup(&path[..len]) {
                return match key_pos {
                    Some(k) if prefer_key || len < path.len() => k,
                    _ => node.pos,
                };
            }
        }
        self.pos
    }

    /// The value of a mapping entry, if this node is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.name == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string value of this node, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name for the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) | NodeValue::UInt(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }

    /// The node as JSON. Non-finite floats (`.nan`, `.inf`) have no JSON form: they
    /// are returned as errors with their position.
    pub fn to_json(&self) -> Result<serde_json::Value, YamlError> {
        use serde_json::Value;
        Ok(match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::UInt(u) => Value::from(*u),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .ok_or_else(|| YamlError {
                    pos: self.pos,
                    message: format!("{f} is not a number JSON can hold"),
                })?,
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => {
                Value::Array(items.iter().map(Node::to_json).collect::<Result<_, _>>()?)
            }
            NodeValue::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    map.insert(k.name.clone(), v.to_json()?);
                }
                Value::Object(map)
            }
        })
    }
}

/// Renders a path as `spec.template.spec.containers[0].image`.
pub fn render_path(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Parses every non-empty document of a YAML (or JSON) text.
///
/// Duplicate keys are errors; YAML 1.2 booleans only (`yes` stays a string); a number
/// with a leading zero is octal, as Kubernetes reads it (`defaultMode: 0644` is 420); the
/// parser's budget limits alias expansion, so hostile input ends in an error, not a hang.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, YamlError> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        strict_booleans: true,
        legacy_octal_numbers: true,
        with_snippet: false,
    };
    let docs: Vec<Spanned<RawNode>> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| yaml_error(&e))?;
    Ok(docs.into_iter().map(into_node).collect())
}

fn yaml_error(e: &serde_saphyr::Error) -> YamlError {
    let pos = e
        .location()
        .map(Pos::from_location)
        .unwrap_or(Pos { line: 1, column: 1 });
    let raw = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
    let message: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    YamlError { pos, message }
}

fn into_node(s: Spanned<RawNode>) -> Node {
    Node {
        pos: Pos::from_location(s.referenced),
        value: s.value.0,
    }
}

/// The deserialisation target: any YAML value, children with positions.
struct RawNode(NodeValue);

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor).map(RawNode)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<NodeValue, E> {
        Ok(i64::try_from(v).map_or(NodeValue::UInt(v), NodeValue::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeValue, E> {
        i64::try_from(v)
            .map(NodeValue::Int)
            .or_else(|_| u64::try_from(v).map(NodeValue::UInt))
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeValue, E> {
        u64::try_from(v)
            .map(|v| self.visit_u64::<E>(v).unwrap_or(NodeValue::UInt(v)))
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<NodeValue, E> {
        String::from_utf8(v.to_vec())
            .map(NodeValue::Str)
            .map_err(|_| E::custom("binary value is not UTF-8 text"))
    }
    fn visit_unit<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_none<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        RawNode::deserialize(d).map(|n| n.0)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        RawNode::deserialize(d).map(|n| n.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Spanned<RawNode>>()? {
            items.push(into_node(item));
        }
        Ok(NodeValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<Spanned<RawKey>>()? {
            let value = map.next_value::<Spanned<RawNode>>()?;
            entries.push((
                Key {
                    name: key.value.0,
                    pos: Pos::from_location(key.referenced),
                },
                into_node(value),
            ));
        }
        Ok(NodeValue::Map(entries))
    }
}

/// A mapping key: any scalar, as a string.
struct RawKey(String);

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_bool<E>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_str<E>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
            fn visit_unit<E>(self) -> Result<String, E> {
                Ok("null".to_owned())
            }
        }
        d.deserialize_any(KeyVisitor).map(RawKey)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let docs = parse_documents("a: 1\nb:\n  c: [x, y]\n---\n---\nd: true\n").unwrap();
        assert_eq!(docs.len(), 2);
        let b = docs[0].get("b").unwrap();
        let (c, key) = b.lookup(&[PathSeg::Key("c".into())]).unwrap();
        assert_eq!(key, Some(Pos { line: 3, column: 3 }));
        let NodeValue::Seq(items) = &c.value else {
            panic!("not a list")
        };
        assert_eq!(
            items[1].pos,
            Pos {
                line: 3,
                column: 10
            }
        );
        assert_eq!(docs[1].get("d").unwrap().value, NodeValue::Bool(true));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.pos.line, 2, "{err:?}");
    }

    #[test]
    fn yes_stays_a_string() {
        let docs = parse_documents("a: yes\nb: \"80\"\nc: 80\n").unwrap();
        assert_eq!(
            docs[0].get("a").unwrap().value,
            NodeValue::Str("yes".into())
        );
        assert_eq!(docs[0].get("b").unwrap().value, NodeValue::Str("80".into()));
        assert_eq!(docs[0].get("c").unwrap().value, NodeValue::Int(80));
    }

    #[test]
    fn leading_zero_numbers_are_octal_as_in_kubernetes() {
        let docs = parse_documents("a: 0644\nb: 0o600\nc: 420\nd: \"0644\"\n").unwrap();
        let v = |k: &str| docs[0].get(k).unwrap().value.clone();
        assert_eq!(v("a"), NodeValue::Int(0o644));
        assert_eq!(v("b"), NodeValue::Int(0o600));
        assert_eq!(v("c"), NodeValue::Int(420));
        assert_eq!(v("d"), NodeValue::Str("0644".into()));
    }

    #[test]
    fn tabs_are_an_error_with_a_position() {
        let err = parse_documents("a:\n\tb: 1\n").unwrap_err();
        assert_eq!(err.pos.line, 2, "{err:?}");
    }
}
