//! Reading a config file: YAML text → JSON tree (line/column on syntax errors), a map from key
//! paths to source positions, unknown-key checks with "did you mean", `${VAR}` and
//! `${VAR:-default}` interpolation in string values, then figment layering of `HERALD_`
//! environment overrides (`HERALD_HTTP__LISTEN=0.0.0.0:80`) and extraction into `RawConfig`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Serialized};
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};

use super::diagnostic::{ConfigErrors, Diagnostic, Origin};
use super::model::RawConfig;

/// Prefix of environment variables that override config keys; `__` separates key levels.
pub const ENV_PREFIX: &str = "HERALD_";

/// Variables with the prefix that are not overrides (they pick the file, etc.).
const ENV_NOT_OVERRIDES: &[&str] = &["CONFIG"];

/// A key path inside the document: mapping keys and sequence indexes as text.
pub type KeyPath = Vec<String>;

/// Source positions of keys and values, by key path.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    file: PathBuf,
    keys: HashMap<KeyPath, (usize, usize)>,
    values: HashMap<KeyPath, (usize, usize)>,
    /// Paths whose value came from a `HERALD_` environment variable, with its name.
    env: HashMap<KeyPath, String>,
}

impl SourceMap {
    /// Where the value at `path` came from (falling back to its key, then to the closest
    /// ancestor, then to the file).
    pub fn value_origin(&self, path: &[String]) -> Origin {
        self.origin(path, true)
    }

    /// Where the key at `path` is written.
    pub fn key_origin(&self, path: &[String]) -> Origin {
        self.origin(path, false)
    }

    fn origin(&self, path: &[String], value_first: bool) -> Origin {
        let mut p = path.to_vec();
        loop {
            if let Some(var) = self.env.get(&p) {
                return Origin::Env(var.clone());
            }
            let (first, second) = if value_first {
                (&self.values, &self.keys)
            } else {
                (&self.keys, &self.values)
            };
            if let Some((line, column)) = first.get(&p).or_else(|| second.get(&p)) {
                return Origin::File {
                    path: self.file.clone(),
                    line: *line,
                    column: *column,
                };
            }
            if p.pop().is_none() {
                return Origin::Whole(self.file.clone());
            }
        }
    }
}

/// A parsed, interpolated and overlaid config with its positions.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    pub raw: RawConfig,
    pub map: SourceMap,
}

/// Read and parse `path` with the process environment.
pub fn read(path: &Path) -> Result<Source, ConfigErrors> {
    let text = read_text(path)?;
    parse(path, &text, &|name| std::env::var(name).ok())
}

/// The text of the config file at `path`.
pub fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole(path, format!("cannot read config file: {e}")))
}

/// Parse `text` (the contents of `path`). `lookup` resolves `${VAR}` references.
pub fn parse(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, ConfigErrors> {
    let file = path.to_path_buf();
    // 1. YAML syntax → JSON tree.
    let tree: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str::<Value>(text).map_err(|e| yaml_error(&file, text, &e))?
    };
    let tree = match tree {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => tree,
        _ => {
            return Err(ConfigErrors::one(Diagnostic::new(
                Origin::File {
                    path: file.clone(),
                    line: 1,
                    column: 1,
                },
                "the config file must be a mapping of sections (signalr, http, hubs, ...)",
            )));
        }
    };
    let mut map = positions(&file, text);
    map.env = env_override_paths();

    // 2. Unknown keys, all of them, with suggestions.
    let schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default();
    let mut errors = Vec::new();
    unknown_keys(
        &tree,
        &schema,
        &schema,
        &mut Vec::new(),
        &map,
        text,
        &mut errors,
    );

    // 3. ${VAR} interpolation in every string value.
    let mut tree = tree;
    interpolate_tree(&mut tree, &mut Vec::new(), lookup, &map, text, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors::new(errors));
    }

    // 4. HERALD_ environment overrides, layered with figment, then typed extraction.
    let figment = Figment::from(Serialized::defaults(&tree)).merge(
        Env::prefixed(ENV_PREFIX).split("__").filter(|k| {
            !ENV_NOT_OVERRIDES
                .iter()
                .any(|n| k.as_str().eq_ignore_ascii_case(n))
        }),
    );
    let raw: RawConfig = figment.extract().map_err(|e| ConfigErrors {
        diagnostics: e
            .into_iter()
            .map(|err| {
                let path: KeyPath = err.path.clone();
                Diagnostic::new(map.value_origin(&path), describe_figment(&err)).with_source(text)
            })
            .collect(),
    })?;
    Ok(Source {
        path: file,
        text: text.to_string(),
        raw,
        map,
    })
}

fn describe_figment(err: &figment::Error) -> String {
    let key = err.path.join(".");
    let kind = err.kind.to_string();
    if key.is_empty() {
        kind
    } else {
        format!("`{key}`: {kind}")
    }
}

fn yaml_error(file: &Path, text: &str, e: &serde_saphyr::Error) -> ConfigErrors {
    let rendered = e.to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .to_string();
    // Drop saphyr's own "line L column C: " prefix; the origin carries the position.
    let message = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest.to_string(),
        _ => first,
    };
    let origin = match e.location() {
        Some(loc) if loc.line() > 0 => Origin::File {
            path: file.to_path_buf(),
            line: loc.line() as usize,
            column: loc.column().max(1) as usize,
        },
        _ => Origin::Whole(file.to_path_buf()),
    };
    ConfigErrors::one(Diagnostic::new(origin, format!("invalid YAML: {message}")).with_source(text))
}

/// Record the position of every key and value by walking the YAML events.
fn positions(file: &Path, text: &str) -> SourceMap {
    enum Frame {
        Map { path: KeyPath, key: Option<String> },
        Seq { path: KeyPath, next: usize },
    }
    let mut map = SourceMap {
        file: file.to_path_buf(),
        ..Default::default()
    };
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let at = (span.start.line(), span.start.col() + 1);
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
                | Event::Alias(..)
        );
        if is_node {
            // A scalar in key position of a mapping is a key, not a value.
            if let Some(Frame::Map { path, key }) = stack.last_mut()
                && key.is_none()
            {
                let name = match &event {
                    Event::Scalar(v, ..) => v.to_string(),
                    _ => "?".to_string(),
                };
                let mut p = path.clone();
                p.push(name.clone());
                map.keys.insert(p, at);
                *key = Some(name);
                if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
                    // A complex key: skip its contents by tracking it as an anonymous frame.
                    stack.push(Frame::Seq {
                        path: vec!["?".into()],
                        next: 0,
                    });
                }
                continue;
            }
            let path: KeyPath = match stack.last_mut() {
                Some(Frame::Map { path, key }) => {
                    let mut p = path.clone();
                    p.push(key.take().unwrap_or_default());
                    p
                }
                Some(Frame::Seq { path, next }) => {
                    let mut p = path.clone();
                    p.push(next.to_string());
                    *next += 1;
                    p
                }
                None => Vec::new(),
            };
            map.values.entry(path.clone()).or_insert(at);
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map { path, key: None }),
                Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
                _ => {}
            }
        } else if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
            stack.pop();
        }
    }
    map
}

/// Key paths set by `HERALD_` variables, lowercased and split on `__` as figment does.
fn env_override_paths() -> HashMap<KeyPath, String> {
    std::env::vars()
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            if ENV_NOT_OVERRIDES
                .iter()
                .any(|n| rest.eq_ignore_ascii_case(n))
            {
                return None;
            }
            let path: KeyPath = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            Some((path, name))
        })
        .collect()
}

/// Follow `$ref`s and pick the object-shaped branch of `anyOf`/`oneOf` (Option fields).
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match root.get("$defs").and_then(|d| d.get(name)) {
                Some(next) => s = next,
                None => return s,
            }
        } else if let Some(branches) = s
            .get("anyOf")
            .or_else(|| s.get("oneOf"))
            .and_then(Value::as_array)
        {
            match branches
                .iter()
                .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))
            {
                Some(b) => s = b,
                None => return s,
            }
        } else {
            return s;
        }
    }
    s
}

fn unknown_keys(
    value: &Value,
    schema: &Value,
    root: &Value,
    path: &mut KeyPath,
    map: &SourceMap,
    text: &str,
    out: &mut Vec<Diagnostic>,
) {
    let schema = resolve(schema, root);
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in fields {
                path.push(key.clone());
                match props.and_then(|p| p.get(key)) {
                    Some(child_schema) => {
                        unknown_keys(child, child_schema, root, path, map, text, out)
                    }
                    None => match additional {
                        Some(Value::Bool(false)) => {
                            let allowed: Vec<&str> = props
                                .map(|p| p.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            out.push(
                                Diagnostic::new(
                                    map.key_origin(path),
                                    unknown_key_message(key, path, &allowed),
                                )
                                .with_source(text),
                            );
                        }
                        Some(s @ Value::Object(_)) => {
                            unknown_keys(child, s, root, path, map, text, out)
                        }
                        _ => {}
                    },
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    path.push(i.to_string());
                    unknown_keys(child, item_schema, root, path, map, text, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn unknown_key_message(key: &str, path: &[String], allowed: &[&str]) -> String {
    let section = if path.len() > 1 {
        format!(" in `{}`", path[..path.len() - 1].join("."))
    } else {
        String::new()
    };
    let mut msg = format!("unknown key `{key}`{section}");
    if let Some(best) = did_you_mean(key, allowed) {
        msg.push_str(&format!("; did you mean `{best}`?"));
    } else if !allowed.is_empty() {
        msg.push_str(&format!("; expected one of: {}", allowed.join(", ")));
    }
    msg
}

/// The closest allowed word, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn interpolate_tree(
    value: &mut Value,
    path: &mut KeyPath,
    lookup: &dyn Fn(&str) -> Option<String>,
    map: &SourceMap,
    text: &str,
    out: &mut Vec<Diagnostic>,
) {
    match value {
        Value::String(s) => match interpolate(s, lookup) {
            Ok(Some(new)) => *s = new,
            Ok(None) => {}
            Err(message) => {
                out.push(Diagnostic::new(map.value_origin(path), message).with_source(text))
            }
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate_tree(item, path, lookup, map, text, out);
                path.pop();
            }
        }
        Value::Object(fields) => {
            for (k, item) in fields.iter_mut() {
                path.push(k.clone());
                interpolate_tree(item, path, lookup, map, text, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Replace `${VAR}` and `${VAR:-default}` in `s`; `$${` stands for a literal `${`.
/// Returns `Ok(None)` when `s` has no reference.
pub fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest[..i].ends_with('$') {
            // `$${` → literal `${`.
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name `{name}` in `${{{inner}}}`"));
        }
        match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn interpolation_forms() {
        let e = env(&[("A", "1"), ("EMPTY", "")]);
        assert_eq!(interpolate("x${A}y", &e).unwrap().as_deref(), Some("x1y"));
        assert_eq!(
            interpolate("${B:-def}", &e).unwrap().as_deref(),
            Some("def")
        );
        assert_eq!(
            interpolate("${EMPTY:-def}", &e).unwrap().as_deref(),
            Some("def")
        );
        assert_eq!(interpolate("${B:-}", &e).unwrap().as_deref(), Some(""));
        assert_eq!(interpolate("$${A}", &e).unwrap().as_deref(), Some("${A}"));
        assert_eq!(interpolate("plain", &e).unwrap(), None);
        assert!(
            interpolate("${B}", &e)
                .unwrap_err()
                .contains("`B` is not set")
        );
        assert!(interpolate("${A", &e).unwrap_err().contains("unterminated"));
        assert!(
            interpolate("${A B}", &e)
                .unwrap_err()
                .contains("invalid variable name")
        );
    }

    #[test]
    fn unset_variable_names_variable_and_line() {
        let text = "http:\n  listen: 127.0.0.1:1\nroutes:\n  r:\n    path: /x\n    hub: h\n    template: t\n    auth:\n      api_key: ${NOPE_KEY}\n";
        let err = parse(Path::new("n.yaml"), text, &env(&[])).unwrap_err();
        let d = &err.diagnostics[0];
        assert!(
            d.to_string()
                .starts_with("n.yaml:9:16: environment variable `NOPE_KEY`"),
            "{d}"
        );
    }

    #[test]
    fn unknown_keys_are_all_reported_with_hints() {
        let text = "shedules: {}\nhttp:\n  lisen: 1.2.3.4:5\n  cors: {allowed_origin: []}\n";
        let err = parse(Path::new("f.yaml"), text, &env(&[])).unwrap_err();
        let lines: Vec<String> = err.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "f.yaml:1:1: unknown key `shedules`; did you mean `schedules`?",
                "f.yaml:3:3: unknown key `lisen` in `http`; did you mean `listen`?",
                "f.yaml:4:10: unknown key `allowed_origin` in `http.cors`; did you mean `allowed_origins`?",
            ]
        );
    }

    #[test]
    fn yaml_syntax_error_has_position() {
        let err = parse(Path::new("f.yaml"), "hubs:\n  a: [1, 2\n", &env(&[])).unwrap_err();
        let d = &err.diagnostics[0];
        assert!(matches!(d.origin, Origin::File { .. }), "{d}");
        assert!(d.message.starts_with("invalid YAML"), "{d}");
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let text = "schedules:\n  s:\n    cron: '* * * * * *'\n    hub: h\n    template: t\n    run_on_startup: sometimes\n";
        let err = parse(Path::new("f.yaml"), text, &env(&[])).unwrap_err();
        let d = &err.diagnostics[0];
        assert!(
            d.to_string()
                .starts_with("f.yaml:6:21: `schedules.s.run_on_startup`"),
            "{d}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn env_overrides_are_layered_with_figment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_HTTP__LISTEN", "0.0.0.0:9999");
            jail.set_env("HERALD_CONFIG", "ignored.yaml");
            let src = parse(
                Path::new("f.yaml"),
                "http:\n  listen: 127.0.0.1:1\n",
                &env(&[]),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(src.raw.http.listen, "0.0.0.0:9999");
            assert_eq!(
                src.map.value_origin(&["http".into(), "listen".into()]),
                Origin::Env("HERALD_HTTP__LISTEN".into())
            );
            Ok(())
        });
    }
}
