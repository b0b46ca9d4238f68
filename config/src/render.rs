//! The default configuration as a commented TOML file: every key with its
//! default value (keys unset by default shown commented out) and what it
//! does, from each section's own [`Section::KEYS`].

use crate::{KeyDoc, Section};

/// The comments of a whole file: one entry per table and per key, by full
/// dotted path.
#[derive(Debug, Clone, Default)]
pub struct Docs {
    tables: Vec<(String, &'static str)>,
    keys: Vec<(String, KeyDoc)>,
}

impl Docs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds section `S`'s comments under the name `name`.
    pub fn section<S: Section>(mut self, name: &str) -> Self {
        self.tables.push((name.to_owned(), S::DOC));
        for (path, doc) in S::TABLES {
            self.tables.push((format!("{name}.{path}"), doc));
        }
        for key in S::KEYS {
            self.keys.push((format!("{name}.{}", key.key), *key));
        }
        self
    }

    fn table(&self, path: &str) -> Option<&'static str> {
        self.tables.iter().find(|(p, _)| p == path).map(|(_, d)| *d)
    }

    /// Keys documented directly in table `path`, in their documented order.
    fn keys_in<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a str, &'a KeyDoc)> + 'a {
        self.keys.iter().filter_map(move |(key, doc)| {
            let rest = key.strip_prefix(path)?.strip_prefix('.')?;
            (!rest.contains('.')).then_some((rest, doc))
        })
    }
}

/// `defaults` as a commented file: `header`, then each table with its
/// comment and each key with its comment and value.
pub fn render<T: serde::Serialize>(defaults: &T, header: &str, docs: &Docs) -> String {
    let table = toml::Table::try_from(defaults).expect("settings serialise to a TOML table");
    let mut out = String::from(header);
    for (name, value) in &table {
        if let toml::Value::Table(section) = value {
            render_table(&mut out, name, section, docs);
        }
    }
    out
}

/// What is wrong with `docs` for `defaults`: keys and tables without a
/// comment, comments of keys that do not exist. Empty when all is well.
pub fn undocumented<T: serde::Serialize>(defaults: &T, docs: &Docs) -> Vec<String> {
    let table = toml::Table::try_from(defaults).expect("settings serialise to a TOML table");
    let (mut keys, mut tables) = (Vec::new(), Vec::new());
    walk(&table, "", &mut keys, &mut tables);
    let mut problems = Vec::new();
    for key in &keys {
        if !docs.keys.iter().any(|(k, _)| k == key) {
            problems.push(format!("key {key} has no comment"));
        }
    }
    for (key, doc) in &docs.keys {
        if !keys.contains(key) && doc.example.is_none() {
            problems.push(format!("{key} is documented but is not a key"));
        }
    }
    for path in &tables {
        if docs.table(path).is_none() {
            problems.push(format!("table [{path}] has no comment"));
        }
    }
    problems
}

fn walk(table: &toml::Table, prefix: &str, keys: &mut Vec<String>, tables: &mut Vec<String>) {
    for (name, value) in table {
        let path = format!("{prefix}{name}");
        match value {
            toml::Value::Table(inner) => {
                walk(inner, &format!("{path}."), keys, tables);
                tables.push(path);
            }
            _ => keys.push(path),
        }
    }
}

fn render_table(out: &mut String, path: &str, table: &toml::Table, docs: &Docs) {
    out.push('\n');
    if let Some(text) = docs.table(path) {
        push_comment(out, text);
    }
    out.push_str(&format!("[{path}]\n"));
    let documented: Vec<(&str, &KeyDoc)> = docs.keys_in(path).collect();
    let mut first = true;
    let mut separate = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
    };
    // Keys in the comments' order (which places the unset ones), then any
    // key without a comment (`undocumented` reports those).
    for (name, d) in &documented {
        match (table.get(*name), d.example) {
            (Some(value), _) if !value.is_table() => {
                separate(out);
                push_comment(out, d.doc);
                out.push_str(&format!("{name} = {}\n", render_value(value)));
            }
            (None, Some(example)) => {
                separate(out);
                push_comment(out, d.doc);
                out.push_str(&format!("# {name} = {example}\n"));
            }
            _ => {}
        }
    }
    for (name, value) in table {
        if !value.is_table() && !documented.iter().any(|(n, _)| n == name) {
            separate(out);
            out.push_str(&format!("{name} = {}\n", render_value(value)));
        }
    }
    for (name, value) in table {
        if let toml::Value::Table(inner) = value {
            render_table(out, &format!("{path}.{name}"), inner, docs);
        }
    }
}

/// A value as TOML; long arrays several elements per line, lines of at
/// most ~78 columns.
fn render_value(value: &toml::Value) -> String {
    let inline = value.to_string();
    let toml::Value::Array(items) = value else {
        return inline;
    };
    if inline.len() <= 60 {
        return inline;
    }
    let mut s = String::from("[\n");
    let mut line = String::new();
    for item in items {
        let item = format!("{item},");
        if !line.is_empty() && 4 + line.len() + 1 + item.len() > 78 {
            s.push_str(&format!("    {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&item);
    }
    if !line.is_empty() {
        s.push_str(&format!("    {line}\n"));
    }
    s.push(']');
    s
}

/// `text` as `# ` comment lines of at most ~78 columns.
fn push_comment(out: &mut String, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && 2 + line.len() + 1 + word.len() > 78 {
            out.push_str(&format!("# {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("# {line}\n"));
    }
}
