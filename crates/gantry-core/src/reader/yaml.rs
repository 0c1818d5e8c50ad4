//! A small YAML document tree that keeps source positions (the base of [`super::Reader`]).
//!
//! Built from `granit-parser`'s marked event stream (the parser `serde-saphyr` uses), so every
//! key and value of the spec can be reported at its `line:column`. Scalars are kept as text and
//! resolved per the YAML 1.2 core schema only when a typed value is asked for.

use std::collections::HashMap;

use granit_parser::{Event, Marker, Parser, ScalarStyle};

/// Most nodes a document may have, counting alias expansions (guards against alias bombs).
const MAX_NODES: usize = 100_000;

/// A 1-based source position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, col: 1 };

    fn from_marker(m: &Marker) -> Pos {
        Pos {
            line: m.line().max(1),
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// `plain` scalars are resolved per the core schema (`3` is an integer); quoted, block and
    /// `!!str`-tagged scalars are always strings.
    ///
    /// `empty` marks a value that is not written at all (`key:`), which YAML reads as null.
    Scalar {
        value: String,
        plain: bool,
        empty: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A resolved scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// Saturates at the bounds of `i128`.
    Int(i128),
    Float,
    Str(&'a str),
}

impl Node {
    /// The resolved scalar, or `None` for collections.
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match &self.kind {
            Kind::Scalar {
                value, plain: true, ..
            } => Some(resolve_plain(value)),
            Kind::Scalar { value, .. } => Some(Scalar::Str(value)),
            _ => None,
        }
    }

    /// The scalar's text as written (after YAML unescaping), for any non-null scalar.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } if self.scalar() != Some(Scalar::Null) => Some(value),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.scalar() == Some(Scalar::Null)
    }

    /// An absent value (`key:` with nothing after it).
    pub fn is_empty_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { empty: true, .. })
    }

    /// `a string "x"`, `an integer 3`, `a mapping`… for type errors.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
            Kind::Scalar { value, .. } => match self.scalar() {
                Some(Scalar::Null) => "nothing (null)".into(),
                Some(Scalar::Bool(_)) => format!("a boolean `{value}`"),
                Some(Scalar::Int(_)) => format!("an integer `{value}`"),
                Some(Scalar::Float) => format!("a number `{value}`"),
                _ => format!("a string {value:?}"),
            },
        }
    }

    fn size(&self) -> usize {
        match &self.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

fn resolve_plain(s: &str) -> Scalar<'_> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Scalar::Float,
        _ => {}
    }
    if let Some(i) = resolve_int(s) {
        return Scalar::Int(i);
    }
    if is_float(s) {
        return Scalar::Float;
    }
    Scalar::Str(s)
}

fn resolve_int(s: &str) -> Option<i128> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = s.strip_prefix("0o") {
        (o, 8)
    } else {
        (s, 10)
    };
    let (neg, body) = match (radix, digits.as_bytes().first()) {
        (10, Some(b'-')) => (true, &digits[1..]),
        (10, Some(b'+')) => (false, &digits[1..]),
        _ => (false, digits),
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(match i128::from_str_radix(body, radix) {
        Ok(v) if neg => -v,
        Ok(v) => v,
        Err(_) if neg => i128::MIN,
        Err(_) => i128::MAX,
    })
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exp_ok = exp.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exp_ok
}

/// A syntax error (or an unsupported document shape) at a position.
#[derive(Debug, Clone)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
    pub hint: String,
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

/// Parses `text` into a tree; `Ok(None)` for a document without content.
pub fn load(text: &str) -> Result<Option<Node>, YamlError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;

    for next in Parser::new_from_str(text) {
        let (event, span) = next.map_err(|e| YamlError {
            pos: Pos::from_marker(e.marker()),
            message: format!("yaml syntax error: {}", lowercase_first(&e.info())),
            hint: "check the indentation and quoting around this position".into(),
        })?;
        let pos = Pos::from_marker(&span.start);
        let (done, anchor) = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        pos,
                        message: "a spec file holds exactly one yaml document".into(),
                        hint: "remove the `---` separator and everything after it, or split \
                               the specs into separate files"
                            .into(),
                    });
                }
                continue;
            }
            Event::Scalar(value, style, anchor, tag) => {
                let forced_str = tag.as_deref().and_then(|t| t.core_suffix()) == Some("str");
                let plain = style == ScalarStyle::Plain && !forced_str;
                let value = value.into_owned();
                let empty = plain && span.start.index() == span.end.index();
                (
                    Node {
                        pos,
                        kind: Kind::Scalar {
                            value,
                            plain,
                            empty,
                        },
                    },
                    anchor,
                )
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame::Seq(pos, anchor, Vec::new()));
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame::Map(pos, anchor, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(pos, anchor, items)) => (
                    Node {
                        pos,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                ),
                Some(Frame::Map(pos, anchor, entries, _)) => (
                    Node {
                        pos,
                        kind: Kind::Map(entries),
                    },
                    anchor,
                ),
                None => continue,
            },
            Event::Alias(id) => match anchors.get(&id) {
                Some(target) => {
                    nodes += target.size();
                    let mut node = target.clone();
                    node.pos = pos;
                    (node, 0)
                }
                None => {
                    return Err(YamlError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                        hint: "define the anchor with `&name` before using `*name`".into(),
                    });
                }
            },
            _ => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(YamlError {
                pos,
                message: format!("document is too large (more than {MAX_NODES} nodes)"),
                hint: "a cluster spec is small; check for runaway aliases".into(),
            });
        }
        if anchor != 0 {
            anchors.insert(anchor, done.clone());
        }
        match stack.last_mut() {
            None => root = root.or(Some(done)),
            Some(Frame::Seq(_, _, items)) => items.push(done),
            Some(Frame::Map(_, _, entries, key)) => match key.take() {
                None => *key = Some(done),
                Some(k) => entries.push((k, done)),
            },
        }
    }
    Ok(root)
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
