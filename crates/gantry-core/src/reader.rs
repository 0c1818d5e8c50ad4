//! The position-keeping reader every gantry YAML format is read with: cluster specs, blueprints,
//! and each provider's own `provider:` section (parsed by the provider's crate).
//!
//! The text is first loaded into a tree that keeps source positions ([`yaml`]); a [`Reader`]
//! then walks it field by field, collecting *every* problem as a [`SpecErrorItem`] (1-based line
//! and column, lowercase message, hint) instead of stopping at the first, so all formats report
//! errors the same way: `file:line:column`, rendered like rustc ([`render_error`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub mod yaml;

pub use yaml::{Kind, Node, Pos, Scalar};

use crate::{CoreError, SpecError, SpecErrorItem, validate_name};

/// `12h`, `30m`, `4h30m`, `2d`: a duration as specs and blueprints write it.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, CoreError> {
    humantime::parse_duration(s).map_err(|e| CoreError::InvalidDuration {
        input: s.into(),
        reason: e.to_string(),
    })
}

/// Renders every item like rustc: `file:line:col: error: message`, the source line with a caret
/// under the column, then `  hint: ...`.
pub fn render_error(err: &SpecError, text: &str) -> String {
    render_items("error", err, text)
}

/// [`warnings`] of `file`, rendered like errors but as `warning:`.
pub fn render_warnings(file: &str, items: &[SpecErrorItem], text: &str) -> String {
    let err = SpecError {
        file: file.to_string(),
        items: items.to_vec(),
    };
    render_items("warning", &err, text)
}

fn render_items(kind: &str, err: &SpecError, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let width = err
        .items
        .iter()
        .map(|i| i.line.to_string().len())
        .max()
        .unwrap_or(1);
    let pad = " ".repeat(width);
    let mut out = String::new();
    for (n, item) in err.items.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}:{}:{}: {kind}: {}",
            err.file, item.line, item.column, item.message
        );
        let source = item
            .line
            .checked_sub(1)
            .and_then(|i| lines.get(i))
            .or_else(|| (item.line == lines.len() + 1).then_some(&""));
        if let Some(source) = source {
            let source = source.strip_suffix('\r').unwrap_or(source);
            // Keep tabs so the caret lines up however the terminal expands them.
            let indent: String = source
                .chars()
                .take(item.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{:>width$} | {source}", item.line);
            let _ = writeln!(out, "{pad} | {indent}^");
        }
        if let Some(hint) = &item.hint {
            let _ = writeln!(out, "  hint: {hint}");
        }
    }
    out
}

/// Walks a [`yaml`] tree and collects every problem found (see the module docs).
#[derive(Debug, Default)]
pub struct Reader {
    items: Vec<SpecErrorItem>,
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub key: &'a str,
    pub key_pos: Pos,
    pub value: &'a Node,
}

impl Field<'_> {
    /// Where to point at the value: the key itself when the value is absent (`key:`).
    pub fn pos(&self) -> Pos {
        if self.value.is_empty_null() {
            self.key_pos
        } else {
            self.value.pos
        }
    }
}

/// The known fields of a mapping, after duplicate and unknown keys were reported.
#[derive(Debug)]
pub struct Fields<'a> {
    pub pos: Pos,
    what: &'static str,
    entries: Vec<Field<'a>>,
}

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<Field<'a>> {
        self.entries.iter().copied().find(|f| f.key == key)
    }

    /// An optional field; an explicit null counts as absent.
    pub fn opt(&self, key: &str) -> Option<Field<'a>> {
        self.get(key).filter(|f| !f.value.is_null())
    }

    pub fn req(&self, r: &mut Reader, key: &str) -> Option<Field<'a>> {
        let field = self.get(key);
        if field.is_none() {
            r.err(
                self.pos,
                format!("missing required field `{key}` in {}", self.what),
                format!("add `{key}: ...` to this mapping"),
            );
        }
        field
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Whether no problem was reported yet.
    pub fn is_clean(&self) -> bool {
        self.items.is_empty()
    }

    /// `value` if no problem was reported, else every problem, sorted by position, as the
    /// error of `file`. A `None` value always is an error (every path that yields none reports
    /// a problem; the contract holds anyway).
    pub fn finish<T>(self, file: &str, value: Option<T>) -> Result<T, SpecError> {
        match value {
            Some(v) if self.items.is_empty() => Ok(v),
            _ => {
                let mut items = self.items;
                if items.is_empty() {
                    items.push(SpecErrorItem {
                        line: 1,
                        column: 1,
                        message: "invalid document".into(),
                        hint: None,
                    });
                }
                items.sort_by_key(|i| (i.line, i.column));
                Err(SpecError {
                    file: file.to_string(),
                    items,
                })
            }
        }
    }

    /// Reports a problem at `pos`: a lowercase `message` and how to fix it.
    pub fn err(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.items.push(SpecErrorItem {
            line: pos.line,
            column: pos.col,
            message: message.into(),
            hint: Some(hint.into()),
        });
    }

    pub fn type_err(&mut self, pos: Pos, what: &str, expected: &str, found: &Node, hint: &str) {
        self.err(
            pos,
            format!(
                "invalid type for `{what}`: expected {expected}, found {}",
                found.describe()
            ),
            hint,
        );
    }

    /// Checks that `node` is a mapping with string keys and no duplicates; reports and drops
    /// duplicate keys.
    pub fn entries<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        hint: &str,
    ) -> Option<Vec<Field<'a>>> {
        let Kind::Map(pairs) = &node.kind else {
            self.type_err(node.pos, what, "a mapping", node, hint);
            return None;
        };
        let mut out: Vec<Field<'a>> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let Some(key) = k.text() else {
                self.err(
                    k.pos,
                    format!("keys of `{what}` must be strings, found {}", k.describe()),
                    "write keys as plain words, e.g. `name: value`",
                );
                continue;
            };
            if let Some(first) = out.iter().find(|f| f.key == key) {
                self.err(
                    k.pos,
                    format!(
                        "duplicate key `{key}` (first defined on line {})",
                        first.key_pos.line
                    ),
                    "remove one of the two entries",
                );
                continue;
            }
            out.push(Field {
                key,
                key_pos: k.pos,
                value: v,
            });
        }
        Some(out)
    }

    /// A mapping of the given known fields; unknown ones are reported with a suggestion.
    pub fn fields<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        context: &'static str,
        known: &[&str],
    ) -> Option<Fields<'a>> {
        let hint = format!("`{what}` takes the fields {}", list(known));
        let entries = self.entries(node, what, &hint)?;
        let mut kept = Vec::with_capacity(entries.len());
        for f in entries {
            if known.contains(&f.key) {
                kept.push(f);
                continue;
            }
            let hint = match closest(f.key, known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("valid fields are {}", list(known)),
            };
            self.err(
                f.key_pos,
                format!("unknown field `{}` in {context}", f.key),
                hint,
            );
        }
        Some(Fields {
            pos: node.pos,
            what: context,
            entries: kept,
        })
    }

    /// Any non-null scalar, as text.
    pub fn string<'a>(&mut self, f: Field<'a>) -> Option<&'a str> {
        let text = f.value.text();
        if text.is_none() {
            self.type_err(
                f.pos(),
                f.key,
                "a string",
                f.value,
                &format!("write a single value, e.g. `{}: something`", f.key),
            );
        }
        text
    }

    pub fn int(&mut self, f: Field<'_>, example: &str) -> Option<i128> {
        match f.value.scalar() {
            Some(Scalar::Int(i)) => Some(i),
            _ => {
                self.type_err(
                    f.pos(),
                    f.key,
                    "an integer",
                    f.value,
                    &format!(
                        "write a whole number without quotes, e.g. `{}: {example}`",
                        f.key
                    ),
                );
                None
            }
        }
    }

    pub fn int_in(&mut self, f: Field<'_>, min: i128, max: i128, example: &str) -> Option<i128> {
        let v = self.int(f, example)?;
        if v < min {
            self.err(
                f.pos(),
                format!("`{}` must be at least {min}, found {v}", f.key),
                format!("use a value between {min} and {max}"),
            );
            None
        } else if v > max {
            self.err(
                f.pos(),
                format!("`{}` must be at most {max}, found {v}", f.key),
                format!("use a value between {min} and {max}"),
            );
            None
        } else {
            Some(v)
        }
    }

    pub fn name(&mut self, f: Field<'_>, kind: &str) -> Option<String> {
        let name = self.string(f)?;
        match validate_name(name) {
            Ok(()) => Some(name.to_string()),
            Err(e) => {
                let reason = match e {
                    CoreError::InvalidName { reason, .. } => reason,
                    other => other.to_string(),
                };
                self.err(
                    f.pos(),
                    format!("invalid {kind} name {name:?}: {reason}"),
                    "names are 1-30 characters of lowercase letters, digits and '-', \
                     starting with a letter and not ending with '-'",
                );
                None
            }
        }
    }

    /// A non-empty string.
    pub fn non_empty(&mut self, f: Field<'_>) -> Option<String> {
        let s = self.string(f)?;
        if s.trim().is_empty() {
            self.err(
                f.pos(),
                format!("`{}` must not be empty", f.key),
                format!("give a value or remove `{}` to use the default", f.key),
            );
            return None;
        }
        Some(s.to_string())
    }

    /// A boolean (`true`, `false`).
    pub fn boolean(&mut self, f: Field<'_>) -> Option<bool> {
        match f.value.scalar() {
            Some(Scalar::Bool(b)) => Some(b),
            _ => {
                self.type_err(
                    f.pos(),
                    f.key,
                    "a boolean",
                    f.value,
                    &format!("write `{}: true`", f.key),
                );
                None
            }
        }
    }

    /// String keys to string values (`labels`, `instance_types`).
    pub fn string_map(&mut self, f: Field<'_>) -> Option<BTreeMap<String, String>> {
        self.string_map_with(f, |_| Ok(()))
    }

    /// [`Reader::string_map`] whose keys must also pass `check_key` (`Err((message, hint))`).
    pub fn string_map_with(
        &mut self,
        f: Field<'_>,
        check_key: impl Fn(&str) -> Result<(), (String, String)>,
    ) -> Option<BTreeMap<String, String>> {
        let hint = format!("write `{}` as `key: value` pairs", f.key);
        let entries = self.entries(f.value, f.key, &hint)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for e in entries {
            if e.key.trim().is_empty() {
                self.err(
                    e.key_pos,
                    format!("`{}` keys must not be empty", f.key),
                    "give the key a name",
                );
                ok = false;
                continue;
            }
            if let Err((message, hint)) = check_key(e.key) {
                self.err(e.key_pos, message, hint);
                ok = false;
                continue;
            }
            match self.string(e) {
                Some(v) => {
                    out.insert(e.key.to_string(), v.to_string());
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// `a`, `b` and `c` as "`a`, `b`, `c`".
pub fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The candidate closest to `input` by edit distance, if it is plausibly a typo of it. Ties go
/// to a candidate with the same first letter (`form` → `from`, not `port`).
pub fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let input = input.to_lowercase();
    let limit = (input.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| {
            let lower = c.to_lowercase();
            let other_start = input.chars().next() != lower.chars().next();
            (edit_distance(&input, &lower), other_start, *c)
        })
        .filter(|(d, _, _)| *d <= limit)
        .min_by_key(|(d, other_start, _)| (*d, *other_start))
        .map(|(_, _, c)| c)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_allow_a_typo_or_two() {
        assert_eq!(closest("cont", &["name", "count"]), Some("count"));
        assert_eq!(closest("form", &["port", "from"]), Some("from"));
        assert_eq!(closest("flavour", &["name", "count"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
