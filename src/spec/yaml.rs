//! A located YAML tree built from `yaml-rust2` parser events.
//!
//! Why not `yaml-rust2`'s own `YamlLoader`: it drops positions, recurses on nesting and
//! expands aliases without limit. This builder keeps a line and column for every node and
//! every mapping key, uses an explicit stack (so hostile nesting cannot overflow ours),
//! caps nesting at [`MAX_DEPTH`] and caps alias expansion at [`MAX_ALIAS_NODES`] per
//! document (billion-laughs). Because every finished tree is at most [`MAX_DEPTH`] deep,
//! the recursive walks elsewhere in `spec` (conversion, cloning, dropping) are bounded.
//!
//! Scalars are resolved by the YAML 1.2 core schema.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting of sequences and mappings accepted in one document.
pub(crate) const MAX_DEPTH: usize = 128;

/// Most nodes that aliases may expand to in one document.
pub(crate) const MAX_ALIAS_NODES: usize = 100_000;

/// The YAML core schema tag prefix that `!!` stands for.
const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// A 1-based line and column in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Self {
        // yaml-rust2 lines are 1-based already; columns are 0-based.
        Pos {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// One node of the located tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// A mapping entry: the key keeps its own position so errors can point at it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// The value of a node. Mapping keys are always strings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

impl Value {
    /// How error messages name this kind of value ("found a mapping").
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(n) if n.is_f64() => "a number",
            Value::Number(_) => "an integer",
            Value::String(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The entry for `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// Converts to JSON. Recursion is bounded by [`MAX_DEPTH`], which every tree obeys.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A problem found while building the tree, at a position in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeError {
    pub pos: Pos,
    pub message: String,
}

impl TreeError {
    fn new(pos: Pos, message: impl Into<String>) -> Self {
        TreeError {
            pos,
            message: message.into(),
        }
    }
}

/// One document of a YAML stream.
#[derive(Debug)]
pub(crate) struct RawDoc {
    /// 0-based index of the document in its stream, counting skipped empty documents.
    pub index: usize,
    pub root: Node,
    /// Problems that do not stop parsing (duplicate keys, bad scalars, bad tags). A
    /// document with errors must not be used.
    pub errors: Vec<TreeError>,
}

/// The result of parsing one YAML stream.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// Documents, without the empty ones (a lone `---` or a trailing `---`).
    pub docs: Vec<RawDoc>,
    /// A problem that stopped parsing: a syntax error, too deep nesting, an alias bomb.
    pub fatal: Option<TreeError>,
}

enum PendingKey {
    None,
    Key(String, Pos),
    /// The key was rejected (already reported); drop the value that follows.
    Skip,
}

/// Mappings with fewer keys than this find duplicates by scanning.
const SMALL_MAP: usize = 16;

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<Entry>,
        seen: HashMap<String, Pos>,
        key: PendingKey,
    },
}

struct Frame {
    pos: Pos,
    anchor: usize,
    kind: FrameKind,
    /// Greatest height of a child so far.
    child_height: usize,
    /// Nodes in this subtree so far, itself included.
    size: usize,
}

/// A finished node with the facts the alias budget needs.
struct Built {
    node: Node,
    /// Levels of collections in the node: 0 for a scalar.
    height: usize,
    /// Nodes in the subtree, itself included.
    size: usize,
}

/// Builds the documents of one stream.
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize, usize)>,
    alias_nodes: usize,
    errors: Vec<TreeError>,
    root: Option<Node>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            stack: Vec::new(),
            anchors: HashMap::new(),
            alias_nodes: 0,
            errors: Vec::new(),
            root: None,
        }
    }

    fn open(&mut self, pos: Pos, anchor: usize, kind: FrameKind) -> Result<(), TreeError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(TreeError::new(
                pos,
                format!("nesting deeper than {MAX_DEPTH} levels: flatten the document"),
            ));
        }
        self.stack.push(Frame {
            pos,
            anchor,
            kind,
            child_height: 0,
            size: 1,
        });
        Ok(())
    }

    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let mut pos = frame.pos;
        let value = match frame.kind {
            FrameKind::Seq(items) => Value::Seq(items),
            FrameKind::Map { entries, .. } => {
                // yaml-rust2 marks a block mapping after its first key; the key is where
                // the mapping visibly starts.
                if let Some(first) = entries.first() {
                    if (first.key_pos.line, first.key_pos.column) < (pos.line, pos.column) {
                        pos = first.key_pos;
                    }
                }
                Value::Map(entries)
            }
        };
        let built = Built {
            node: Node { value, pos },
            height: frame.child_height + 1,
            size: frame.size,
        };
        self.finish(built, frame.anchor);
    }

    /// Registers the anchor (if any) and hands the node to its parent.
    fn finish(&mut self, built: Built, anchor: usize) {
        if anchor != 0 {
            self.anchors
                .insert(anchor, (built.node.clone(), built.height, built.size));
        }
        self.attach(built);
    }

    fn attach(&mut self, built: Built) {
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(built.node);
            return;
        };
        parent.child_height = parent.child_height.max(built.height);
        parent.size = parent.size.saturating_add(built.size);
        match &mut parent.kind {
            FrameKind::Seq(items) => items.push(built.node),
            FrameKind::Map { entries, seen, key } => {
                match std::mem::replace(key, PendingKey::None) {
                    PendingKey::Key(k, key_pos) => entries.push(Entry {
                        key: k,
                        key_pos,
                        value: built.node,
                    }),
                    PendingKey::Skip => {}
                    PendingKey::None => {
                        let pos = built.node.pos;
                        match built.node.value {
                            Value::String(k) => {
                                // Small mappings (nearly all) are scanned; big ones get
                                // an index, built once they pass SMALL_MAP keys.
                                let first = if entries.len() < SMALL_MAP {
                                    entries.iter().find(|e| e.key == k).map(|e| e.key_pos)
                                } else {
                                    if seen.len() < entries.len() {
                                        for e in entries.iter() {
                                            seen.insert(e.key.clone(), e.key_pos);
                                        }
                                    }
                                    seen.get(&k).copied()
                                };
                                if let Some(first) = first {
                                    self.errors.push(TreeError::new(
                                        pos,
                                        format!(
                                            "duplicate key `{k}`: first defined at line {}, column {}",
                                            first.line, first.column
                                        ),
                                    ));
                                    *key = PendingKey::Skip;
                                } else {
                                    if !seen.is_empty() {
                                        seen.insert(k.clone(), pos);
                                    }
                                    *key = PendingKey::Key(k, pos);
                                }
                            }
                            other => {
                                let shown = match &other {
                                    Value::Bool(b) => format!(" `{b}`"),
                                    Value::Number(n) => format!(" `{n}`"),
                                    _ => String::new(),
                                };
                                self.errors.push(TreeError::new(
                                    pos,
                                    format!(
                                        "mapping key{shown} is {}: keys must be strings (quote the key)",
                                        other.kind_name()
                                    ),
                                ));
                                *key = PendingKey::Skip;
                            }
                        }
                    }
                }
            }
        }
    }

    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), TreeError> {
        let Some((node, height, size)) = self.anchors.get(&id) else {
            return Err(TreeError::new(
                pos,
                "alias refers to an anchor that is not complete yet: recursive aliases are not supported",
            ));
        };
        let (height, size) = (*height, *size);
        self.alias_nodes = self.alias_nodes.saturating_add(size);
        if self.alias_nodes > MAX_ALIAS_NODES {
            return Err(TreeError::new(
                pos,
                format!(
                    "aliases expand to more than {MAX_ALIAS_NODES} nodes in this document: use fewer or smaller aliases"
                ),
            ));
        }
        if self.stack.len() + height > MAX_DEPTH {
            return Err(TreeError::new(
                pos,
                format!("nesting deeper than {MAX_DEPTH} levels (through an alias): flatten the document"),
            ));
        }
        let mut node = node.clone();
        // The copy is reported where the alias is written: that is where the user looks.
        node.pos = pos;
        self.attach(Built { node, height, size });
        Ok(())
    }
}

/// Resolves a scalar by the YAML 1.2 core schema, honouring a core tag if present.
fn resolve_scalar(
    text: String,
    style: TScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
) -> Result<Value, TreeError> {
    let plain = matches!(style, TScalarStyle::Plain);
    let Some(tag) = tag else {
        return if plain {
            resolve_plain(&text, pos)
        } else {
            Ok(Value::String(text))
        };
    };
    if tag.handle.is_empty() && tag.suffix == "!" {
        // The non-specific tag `!` makes any scalar a string.
        return Ok(Value::String(text));
    }
    if tag.handle != CORE_TAG_PREFIX {
        return Err(unknown_tag(tag, pos));
    }
    let resolved = resolve_plain(&text, pos);
    let wrong = |want: &str| {
        TreeError::new(
            pos,
            format!("`!!{}` scalar `{text}` is not {want}", tag.suffix),
        )
    };
    match tag.suffix.as_str() {
        "str" => Ok(Value::String(text)),
        "null" => match resolved? {
            Value::Null => Ok(Value::Null),
            _ => Err(wrong("null")),
        },
        "bool" => match resolved? {
            v @ Value::Bool(_) => Ok(v),
            _ => Err(wrong("a boolean")),
        },
        "int" => match resolved? {
            Value::Number(n) if !n.is_f64() => Ok(Value::Number(n)),
            _ => Err(wrong("an integer")),
        },
        "float" => match resolved? {
            Value::Number(n) => Ok(Value::Number(n)),
            _ => Err(wrong("a number")),
        },
        _ => Err(unknown_tag(tag, pos)),
    }
}

fn unknown_tag(tag: &Tag, pos: Pos) -> TreeError {
    let shown = match tag.handle.strip_prefix(CORE_TAG_PREFIX) {
        Some(rest) => format!("!!{rest}{}", tag.suffix),
        None => format!("{}{}", tag.handle, tag.suffix),
    };
    let shown = if shown.starts_with('!') || shown.contains(':') {
        shown
    } else {
        format!("!{shown}")
    };
    TreeError::new(
        pos,
        format!("unsupported tag `{shown}`: expected no tag or one of !!str, !!int, !!float, !!bool, !!null, !!map, !!seq"),
    )
}

/// Checks a tag on a collection: only `!!map` / `!!seq` matching the collection are fine.
fn check_collection_tag(tag: Option<&Tag>, want: &str, pos: Pos) -> Option<TreeError> {
    let tag = tag?;
    if tag.handle.is_empty() && tag.suffix == "!" {
        return None;
    }
    if tag.handle == CORE_TAG_PREFIX && tag.suffix == want {
        return None;
    }
    Some(unknown_tag(tag, pos))
}

/// The YAML 1.2 core schema for plain scalars.
fn resolve_plain(text: &str, pos: Pos) -> Result<Value, TreeError> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => {
            return Err(TreeError::new(
                pos,
                format!(
                "number `{text}` is not finite: expected a finite number (quote it for a string)"
            ),
            ))
        }
        _ => {}
    }
    let bytes = text.as_bytes();
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    let out_of_range = || {
        TreeError::new(
            pos,
            format!("integer `{text}` is out of range: expected at most 64 bits (quote it for a string)"),
        )
    };
    if let Some(hex) = text.strip_prefix("0x") {
        if digits(hex, 16) {
            return u64::from_str_radix(hex, 16)
                .map(|n| Value::Number(n.into()))
                .map_err(|_| out_of_range());
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if digits(oct, 8) {
            return u64::from_str_radix(oct, 8)
                .map(|n| Value::Number(n.into()))
                .map_err(|_| out_of_range());
        }
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits(unsigned, 10) {
        if let Ok(n) = text.parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        if let Ok(n) = text.trim_start_matches('+').parse::<u64>() {
            return Ok(Value::Number(n.into()));
        }
        return Err(out_of_range());
    }
    if is_core_float(unsigned) && !bytes.is_empty() {
        if let Ok(f) = text.parse::<f64>() {
            return match serde_json::Number::from_f64(f) {
                Some(n) if f.is_finite() => Ok(Value::Number(n)),
                _ => Err(TreeError::new(
                    pos,
                    format!("number `{text}` is not finite: expected a finite number (quote it for a string)"),
                )),
            };
        }
    }
    Ok(Value::String(text.to_owned()))
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?` without the sign.
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            all_digits(int) && all_digits(frac) && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && all_digits(mantissa),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && all_digits(e)
        }
    };
    mantissa_ok && exponent_ok
}

/// Parses a whole YAML stream into located documents.
pub(crate) fn parse_stream(text: &str) -> Stream {
    let mut out = Stream::default();
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::new();
    let mut doc_index = 0usize;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(ev) => ev,
            Err(e) => {
                // The scanner has its own flow-nesting limit, and it looks ahead, so it
                // can hit that limit before the builder sees level 129.
                let message = if e.info() == "recursion limit exceeded" {
                    format!("nesting deeper than {MAX_DEPTH} levels: flatten the document")
                } else {
                    format!("invalid YAML: {}", e.info())
                };
                out.fatal = Some(TreeError::new(Pos::from_marker(e.marker()), message));
                return out;
            }
        };
        let pos = Pos::from_marker(&marker);
        let step: Result<(), TreeError> = match event {
            Event::StreamEnd => return out,
            Event::Nothing | Event::StreamStart => Ok(()),
            Event::DocumentStart => {
                builder = Builder::new();
                Ok(())
            }
            Event::DocumentEnd => {
                let done = std::mem::replace(&mut builder, Builder::new());
                if let Some(root) = done.root {
                    // An empty document (a lone `---`) is skipped, like kubectl does.
                    let empty = root.value == Value::Null && done.errors.is_empty();
                    if !empty {
                        out.docs.push(RawDoc {
                            index: doc_index,
                            root,
                            errors: done.errors,
                        });
                    }
                }
                doc_index += 1;
                Ok(())
            }
            Event::Alias(id) => builder.alias(id, pos),
            Event::Scalar(text, style, anchor, tag) => {
                let value = match resolve_scalar(text, style, tag.as_ref(), pos) {
                    Ok(v) => v,
                    Err(e) => {
                        builder.errors.push(e);
                        Value::Null
                    }
                };
                builder.finish(
                    Built {
                        node: Node { value, pos },
                        height: 0,
                        size: 1,
                    },
                    anchor,
                );
                Ok(())
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(e) = check_collection_tag(tag.as_ref(), "seq", pos) {
                    builder.errors.push(e);
                }
                builder.open(pos, anchor, FrameKind::Seq(Vec::new()))
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(e) = check_collection_tag(tag.as_ref(), "map", pos) {
                    builder.errors.push(e);
                }
                builder.open(
                    pos,
                    anchor,
                    FrameKind::Map {
                        entries: Vec::new(),
                        seen: HashMap::new(),
                        key: PendingKey::None,
                    },
                )
            }
            Event::SequenceEnd | Event::MappingEnd => {
                builder.close();
                Ok(())
            }
        };
        if let Err(e) = step {
            out.fatal = Some(e);
            return out;
        }
    }
}
