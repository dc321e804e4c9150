//! One manifest file: bytes → documents → typed objects, with every schema error.

use std::collections::HashSet;

use serde_json::Value;

use crate::ValidationError;
use crate::object::{DesiredObject, KINDS, Object, ObjectKey, Provenance};
use crate::yaml::{self, Node, NodeValue, PathSeg, Pos, render_path};

/// What one file gave: its objects (those that could be typed) and its errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParsedFile {
    pub objects: Vec<DesiredObject>,
    pub errors: Vec<ValidationError>,
}

/// How many type errors are reported per object before giving up on it.
const MAX_TYPE_ERRORS_PER_OBJECT: usize = 50;

fn file_error(path: &str, pos: Pos, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path: path.to_owned(),
        line: pos.line,
        column: pos.column,
        field: String::new(),
        message: message.into(),
    }
}

/// Position (line, column in characters) of a byte offset in a text's valid prefix.
fn pos_of_offset(bytes: &[u8], offset: usize) -> Pos {
    let prefix = &bytes[..offset.min(bytes.len())];
    let line = prefix.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = prefix
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&prefix[line_start..])
        .chars()
        .count()
        + 1;
    Pos {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

/// Parses and type-checks one file.
pub(crate) fn parse_file(path: &str, bytes: &[u8], last_commit: gix::ObjectId) -> ParsedFile {
    let mut out = ParsedFile::default();
    if let Some(nul) = bytes.iter().position(|b| *b == 0) {
        out.errors.push(file_error(
            path,
            pos_of_offset(bytes, nul),
            "binary file (it contains a NUL byte): a manifest must be UTF-8 text",
        ));
        return out;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to();
            let byte = bytes.get(at).copied().unwrap_or(0);
            out.errors.push(file_error(
                path,
                pos_of_offset(bytes, at),
                format!("not UTF-8 text (byte 0x{byte:02x}): a manifest must be UTF-8"),
            ));
            return out;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let docs = match yaml::parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(file_error(
                path,
                e.pos,
                format!("invalid YAML: {}", e.message),
            ));
            return out;
        }
    };
    for (index, doc) in docs.into_iter().enumerate() {
        let mut cx = DocCx {
            path,
            document_index: index,
            last_commit,
            out: &mut out,
        };
        cx.document(doc, Vec::new());
    }
    out
}

struct DocCx<'a> {
    path: &'a str,
    document_index: usize,
    last_commit: gix::ObjectId,
    out: &'a mut ParsedFile,
}

impl DocCx<'_> {
    fn error(
        &mut self,
        node: &Node,
        prefix: &[PathSeg],
        path: &[PathSeg],
        prefer_key: bool,
        message: String,
    ) {
        let pos = node.position_of(path, prefer_key);
        let mut full = prefix.to_vec();
        full.extend_from_slice(path);
        self.out.errors.push(ValidationError {
            path: self.path.to_owned(),
            line: pos.line,
            column: pos.column,
            field: render_path(&full),
            message,
        });
    }

    fn string_field(&mut self, node: &Node, prefix: &[PathSeg], key: &str) -> Option<String> {
        match node.get(key) {
            Some(Node {
                value: NodeValue::Str(s),
                ..
            }) if !s.is_empty() => Some(s.clone()),
            Some(v) => {
                let found = v.type_name();
                self.error(
                    node,
                    prefix,
                    &[key.into()],
                    false,
                    format!("must be a non-empty string, found {found}"),
                );
                None
            }
            None => {
                self.error(
                    node,
                    prefix,
                    &[],
                    false,
                    format!("missing required field `{key}`"),
                );
                None
            }
        }
    }

    /// One document (or one item of a List).
    fn document(&mut self, node: Node, prefix: Vec<PathSeg>) {
        if !matches!(node.value, NodeValue::Map(_)) {
            let found = node.type_name();
            self.error(
                &node,
                &prefix,
                &[],
                false,
                format!("a manifest must be a mapping with apiVersion and kind, found {found}"),
            );
            return;
        }
        let api_version = self.string_field(&node, &prefix, "apiVersion");
        let kind = self.string_field(&node, &prefix, "kind");
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return;
        };
        if api_version == "v1" && kind == "List" {
            self.list(node, prefix);
            return;
        }
        if !KINDS
            .iter()
            .any(|(a, k, _)| *a == api_version && *k == kind)
        {
            let message = match KINDS.iter().find(|(_, k, _)| *k == kind) {
                Some((a, _, _)) => format!(
                    "unknown kind `{kind}` in `{api_version}`: kommit reads {kind} as `apiVersion: {a}`"
                ),
                None => {
                    let known: Vec<String> =
                        KINDS.iter().map(|(a, k, _)| format!("{a} {k}")).collect();
                    format!(
                        "unknown kind `{kind}` (apiVersion `{api_version}`); kommit reads: {}",
                        known.join(", ")
                    )
                }
            };
            self.error(&node, &prefix, &["kind".into()], false, message);
            return;
        }
        let mut json = match node.to_json() {
            Ok(j) => j,
            Err(e) => {
                self.out
                    .errors
                    .push(file_error(self.path, e.pos, e.message));
                return;
            }
        };
        // The JSON as written; a copy is only needed when type errors remove fields.
        let mut input: Option<Value> = None;
        // Type errors: serde stops at the first one, so the offending field is removed and
        // the object typed again, to report every wrong field of the object at once.
        let mut removed: Vec<Vec<PathSeg>> = Vec::new();
        let object = loop {
            match Object::from_json(&api_version, &kind, &json) {
                None => return,
                Some(Ok(o)) => break Some(o),
                Some(Err(e)) => {
                    let path = convert_path(e.path());
                    let message = type_message(&e.into_inner().to_string());
                    self.error(&node, &prefix, &path, false, message);
                    if input.is_none() {
                        input = Some(json.clone());
                    }
                    if removed.len() >= MAX_TYPE_ERRORS_PER_OBJECT
                        || !remove_field(&mut json, &path)
                    {
                        break None;
                    }
                    removed.push(path);
                }
            }
        };
        let Some(mut object) = object else { return };
        let output = object.to_json();
        let mut issues = Vec::new();
        compare(
            input.as_ref().unwrap_or(&json),
            &output,
            &mut Vec::new(),
            &mut issues,
        );
        let mut missing = false;
        for (path, issue) in issues {
            if removed.iter().any(|r| path.starts_with(r)) {
                continue;
            }
            match issue {
                Issue::Unknown => {
                    let name = match path.last() {
                        Some(PathSeg::Key(k)) => k.clone(),
                        _ => String::new(),
                    };
                    self.error(
                        &node,
                        &prefix,
                        &path,
                        true,
                        format!("unknown field `{name}`"),
                    );
                }
                Issue::Missing => {
                    missing = true;
                    let (parent, name) = match path.split_last() {
                        Some((PathSeg::Key(k), parent)) => (parent.to_vec(), k.clone()),
                        _ => (path.clone(), String::new()),
                    };
                    self.error(
                        &node,
                        &prefix,
                        &parent,
                        false,
                        format!("missing required field `{name}`"),
                    );
                }
            }
        }
        let key = self.key_of(&node, &prefix, &mut object);
        // An object that did not type as written (fields removed above) stays, so that
        // other objects referring to it give no follow-up errors; its commit is rejected
        // anyway. With required fields missing, the defaults that stand in for them
        // would only give confusing follow-up errors: no further checks then.
        self.finish(node, prefix, key, object, !missing);
    }

    /// Checks name and namespace presence, fills in the default namespace, returns the key.
    fn key_of(
        &mut self,
        node: &Node,
        prefix: &[PathSeg],
        object: &mut Object,
    ) -> Option<ObjectKey> {
        let namespaced = object.is_namespaced();
        let kind = object.kind();
        let group = object.group().to_owned();
        let meta = object.metadata_mut();
        if meta.generate_name.is_some() {
            self.error(
                node,
                prefix,
                &crate::path!["metadata", "generateName"],
                true,
                "generateName is not supported: an object in Git needs a fixed metadata.name"
                    .to_owned(),
            );
        }
        if !namespaced && meta.namespace.is_some() {
            self.error(
                node,
                prefix,
                &crate::path!["metadata", "namespace"],
                true,
                format!("{kind} is cluster-scoped: remove metadata.namespace"),
            );
        }
        if namespaced && meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some("default".to_owned());
        }
        let namespace = if namespaced {
            meta.namespace.clone()
        } else {
            None
        };
        let name = match meta.name.clone() {
            Some(n) if !n.is_empty() => n,
            _ => {
                // Without metadata at all, the missing `metadata` is already reported.
                if node.get("metadata").is_some() {
                    self.error(
                        node,
                        prefix,
                        &crate::path!["metadata"],
                        false,
                        "missing required field `name`".to_owned(),
                    );
                }
                return None;
            }
        };
        Some(ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.map(Into::into),
            name: name.into(),
        })
    }

    fn list(&mut self, node: Node, prefix: Vec<PathSeg>) {
        for (k, _) in match &node.value {
            NodeValue::Map(e) => e.as_slice(),
            _ => &[],
        } {
            if !matches!(
                k.name.as_str(),
                "apiVersion" | "kind" | "items" | "metadata"
            ) {
                let name = k.name.clone();
                self.error(
                    &node,
                    &prefix,
                    &[name.clone().into()],
                    true,
                    format!("unknown field `{name}`"),
                );
            }
        }
        let Some(items) = node.get("items") else {
            self.error(
                &node,
                &prefix,
                &[],
                false,
                "missing required field `items`".to_owned(),
            );
            return;
        };
        let NodeValue::Seq(items) = &items.value else {
            let found = items.type_name();
            self.error(
                &node,
                &prefix,
                &["items".into()],
                false,
                format!("must be a list, found {found}"),
            );
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let mut p = prefix.clone();
            p.push("items".into());
            p.push(i.into());
            self.document(item.clone(), p);
        }
    }

    fn finish(
        &mut self,
        node: Node,
        prefix: Vec<PathSeg>,
        key: Option<ObjectKey>,
        object: Object,
        check: bool,
    ) {
        let Some(key) = key else { return };
        let obj = DesiredObject {
            key,
            object,
            provenance: Provenance {
                path: self.path.to_owned(),
                document_index: self.document_index,
                line: node.pos.line,
                last_commit: self.last_commit,
            },
            node,
            prefix,
        };
        if check {
            let errors = crate::checks::check_object(&obj);
            self.out.errors.extend(errors);
        }
        self.out.objects.push(obj);
    }
}

enum Issue {
    Unknown,
    Missing,
}

/// Compares what was written with what the typed object keeps: a written field the type
/// dropped is unknown; a field the type filled in that was not written is a missing
/// required field (k8s-openapi defaults required fields instead of failing).
fn compare(
    input: &Value,
    output: &Value,
    path: &mut Vec<PathSeg>,
    issues: &mut Vec<(Vec<PathSeg>, Issue)>,
) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, iv) in i {
                if iv.is_null() {
                    continue;
                }
                path.push(PathSeg::Key(k.clone()));
                match o.get(k) {
                    None => issues.push((path.clone(), Issue::Unknown)),
                    Some(ov) => compare(iv, ov, path, issues),
                }
                path.pop();
            }
            for k in o.keys() {
                if i.get(k).is_none_or(Value::is_null) {
                    path.push(PathSeg::Key(k.clone()));
                    issues.push((path.clone(), Issue::Missing));
                    path.pop();
                }
            }
        }
        (Value::Array(i), Value::Array(o)) if i.len() == o.len() => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                path.push(PathSeg::Index(n));
                compare(iv, ov, path, issues);
                path.pop();
            }
        }
        _ => {}
    }
}

fn convert_path(p: &serde_path_to_error::Path) -> Vec<PathSeg> {
    use serde_path_to_error::Segment;
    p.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(PathSeg::Index(*index)),
            Segment::Map { key } => Some(PathSeg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// serde's wording, made to read as kommit's: types named as a YAML author knows them.
fn type_message(raw: &str) -> String {
    let mut m = raw.to_owned();
    for (from, to) in [
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected u32", "expected an integer"),
        ("expected a string", "expected a string"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
        ("invalid type: map", "invalid type: mapping"),
        ("invalid type: sequence", "invalid type: list"),
    ] {
        m = m.replace(from, to);
    }
    m
}

/// Removes the field at `path` from the JSON tree. False when it cannot be removed
/// (the root, or a list element: removing it would shift the indexes of later errors).
fn remove_field(json: &mut Value, path: &[PathSeg]) -> bool {
    let Some((PathSeg::Key(last), parent)) = path.split_last() else {
        return false;
    };
    let mut node = json;
    for seg in parent {
        node = match (seg, node) {
            (PathSeg::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (PathSeg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Value::Object(m) => m.remove(last).is_some(),
        _ => false,
    }
}

/// Fields of the same object that appear twice in the errors are reported once.
pub(crate) fn dedup(errors: &mut Vec<ValidationError>) {
    let mut seen = HashSet::new();
    errors.retain(|e| seen.insert(e.clone()));
}
