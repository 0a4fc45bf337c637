//! A span-aware reader over a parsed TOML document.
//!
//! serde's `deny_unknown_fields` stops at the first problem; users fix configs faster when they see every problem
//! at once, each with its line. So the config is read by hand from `toml`'s spanned document tree, and every
//! problem is collected instead of returned.

use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One thing wrong with the config, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, e.g. `services.api.port`.
    pub field: String,
    pub span: Range<usize>,
    pub message: String,
}

/// Collects problems while the config is read.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, field: impl Into<String>, span: Range<usize>, message: impl Into<String>) {
        self.0.push(Problem { field: field.into(), span, message: message.into() });
    }
}

/// A TOML table being read: remembers which keys were consumed so the rest can be reported as unknown.
pub struct Section<'a, 'i> {
    path: String,
    table: &'a DeTable<'i>,
    span: Range<usize>,
    used: BTreeSet<String>,
}

/// A value read from the config together with where it stands in the file.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub span: Range<usize>,
}

impl<'a, 'i> Section<'a, 'i> {
    pub fn new(path: impl Into<String>, table: &'a DeTable<'i>, span: Range<usize>) -> Self {
        Section { path: path.into(), table, span, used: BTreeSet::new() }
    }

    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    pub fn field(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    fn get(&mut self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.used.insert(key.to_string());
        self.table.get(key)
    }

    pub fn string(&mut self, key: &str, problems: &mut Problems) -> Option<Located<String>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Located { value: s.to_string(), span: value.span() }),
            other => {
                problems.add(self.field(key), value.span(), format!("expected a string, found {}", other.type_str()));
                None
            }
        }
    }

    pub fn integer(&mut self, key: &str, problems: &mut Problems) -> Option<Located<i64>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Located { value: n, span: value.span() }),
                Err(_) => {
                    problems.add(self.field(key), value.span(), "integer is out of range");
                    None
                }
            },
            other => {
                problems.add(self.field(key), value.span(), format!("expected an integer, found {}", other.type_str()));
                None
            }
        }
    }

    pub fn boolean(&mut self, key: &str, problems: &mut Problems) -> Option<Located<bool>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(Located { value: *b, span: value.span() }),
            other => {
                problems.add(
                    self.field(key),
                    value.span(),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A value of any type, for keys that accept more than one (`nat_gateways = 1 | "per_az"`).
    pub fn value(&mut self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.get(key)
    }

    pub fn string_list(&mut self, key: &str, problems: &mut Problems) -> Option<Vec<Located<String>>> {
        let value = self.get(key)?;
        let Some(items) = value.get_ref().as_array() else {
            let found = value.get_ref().type_str();
            problems.add(self.field(key), value.span(), format!("expected an array of strings, found {found}"));
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Located { value: s.to_string(), span: item.span() }),
                other => {
                    problems.add(self.field(key), item.span(), format!("expected a string, found {}", other.type_str()))
                }
            }
        }
        Some(out)
    }

    pub fn table(&mut self, key: &str, problems: &mut Problems) -> Option<Section<'a, 'i>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Table(t) => Some(Section::new(self.field(key), t, value.span())),
            other => {
                problems.add(self.field(key), value.span(), format!("expected a table, found {}", other.type_str()));
                None
            }
        }
    }

    /// Every entry of the table, for maps keyed by user names (`[services.<name>]`, `environment`).
    pub fn entries(&mut self) -> Vec<(Located<String>, &'a Spanned<DeValue<'i>>)> {
        let entries: Vec<_> =
            self.table.iter().map(|(k, v)| (Located { value: k.get_ref().to_string(), span: k.span() }, v)).collect();
        for (k, _) in &entries {
            self.used.insert(k.value.clone());
        }
        entries
    }

    /// Reports every key that was never asked for, naming the keys that are allowed.
    pub fn finish(self, allowed: &[&str], problems: &mut Problems) {
        for (key, _) in self.table.iter() {
            if !self.used.contains(key.get_ref().as_ref()) {
                let hint = if allowed.is_empty() {
                    String::new()
                } else {
                    format!("; expected one of: {}", allowed.join(", "))
                };
                problems.add(self.field(key.get_ref()), key.span(), format!("unknown key `{}`{hint}", key.get_ref()));
            }
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}
