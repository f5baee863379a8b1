//! What is generated from the settings table: the SETTINGS part of
//! `apigw --help` and the TOML that `apigw config` prints.

use super::{Config, Setting};
use serde_json::Value;
use std::fmt::Write;

const HELP_HEAD: &str = "\
SETTINGS
A TOML file (--config) in sections. Each setting below is `key = default`,
then its flat name: the key it had before sections, which a file of flat
keys (data_listen = \"...\") may still use. From the environment a setting
is APIGW_<FLAT NAME> in capitals (APIGW_DATA_LISTEN=0.0.0.0:8080) or
APIGW_<SECTION>__<KEY> (APIGW_DATA__LISTEN); the environment wins over the
file. `apigw config` prints the effective values (secrets masked).
";

/// Doc lines are wrapped to this width.
const WIDTH: usize = 78;
/// Column of the flat name.
const FLAT_COLUMN: usize = 44;

/// The settings list of `apigw --help`, from the settings' declarations.
pub fn settings_help() -> String {
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    let mut out = format!("{HELP_HEAD}\n");
    let mut section = "";
    for s in Config::settings() {
        if s.section != section {
            section = s.section;
            let _ = write!(out, "\n[{section}]\n");
        }
        let line = format!("  {} = {}", s.key, literal(value_of(&defaults, s)));
        let pad = FLAT_COLUMN.saturating_sub(line.len()).max(2);
        let _ = writeln!(out, "{line}{:pad$}{}", "", s.flat);
        for p in s.paragraphs() {
            wrap(&mut out, &p, "      ");
        }
    }
    out
}

fn value_of<'v>(root: &'v Value, s: &Setting) -> &'v Value {
    let v = if s.section.is_empty() {
        root
    } else {
        &root[s.section]
    };
    &v[s.key]
}

fn wrap(out: &mut String, text: &str, indent: &str) {
    let mut line = String::from(indent);
    for word in text.split(' ') {
        if line.len() > indent.len() && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// Every setting of `cfg` as sectioned TOML, in declaration order.
pub fn to_toml(cfg: &Config) -> anyhow::Result<String> {
    let root = serde_json::to_value(cfg)?;
    let mut out =
        String::from("# apigw: effective configuration (defaults < file < environment)\n");
    let mut section = "";
    // Arrays of tables go after the plain keys of their section.
    let mut tables: Vec<(String, &Value)> = Vec::new();
    for s in Config::settings() {
        if s.section != section {
            flush_tables(&mut out, &mut tables);
            section = s.section;
            let _ = write!(out, "\n[{section}]\n");
        }
        let v = value_of(&root, s);
        match v {
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                tables.extend(items.iter().map(|i| (s.path(), i)));
            }
            _ => {
                let _ = writeln!(out, "{} = {}", s.key, literal(v));
            }
        }
    }
    flush_tables(&mut out, &mut tables);
    Ok(out)
}

fn flush_tables(out: &mut String, tables: &mut Vec<(String, &Value)>) {
    for (path, table) in tables.drain(..) {
        let _ = write!(out, "\n[[{path}]]\n");
        if let Value::Object(m) = table {
            for (k, v) in m {
                let _ = writeln!(out, "{k} = {}", literal(v));
            }
        }
    }
}

/// A value as a TOML literal.
pub(super) fn literal(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(a) => format!("[{}]", a.iter().map(literal).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!("{} = {}", quote(k), literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
