//! Reading a config file: a bounded read (regular files up to `MAX_CONFIG_BYTES`), YAML
//! text → JSON tree (line/column on syntax errors), a map from key paths to source
//! positions, `${VAR}` and `${VAR:-default}` interpolation in string values, figment
//! layering of `HERALD_` environment overrides (`HERALD_HTTP__LISTEN=0.0.0.0:80`), unknown-key
//! checks with "did you mean", and extraction into `RawConfig`. Problems found here do not
//! stop the rest: unknown keys and values of the wrong type are reported and left out, and
//! compile still checks everything else.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Serialized};
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};

use super::diagnostic::{ConfigErrors, Diagnostic, LineIndex, Origin};
pub use super::keypath::KeyPath;
use super::model::RawConfig;

/// Prefix of environment variables that override config keys; `__` separates key levels.
pub const ENV_PREFIX: &str = "HERALD_";

/// Variables with the prefix that are not overrides (they pick the file, etc.).
const ENV_NOT_OVERRIDES: &[&str] = &["CONFIG"];

/// Largest config file herald reads (4 MiB). A larger file, or anything that is not a
/// regular file (a device such as `/dev/zero`, a FIFO), is refused before it is read, so a
/// wrong path never makes herald read until memory runs out.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Most rounds of "extract, drop the value of the wrong type, extract again"; a file with
/// more type errors reports these and stops, so the work stays bounded.
const MAX_TYPE_ERRORS: usize = 64;

/// Most unknown keys in one mapping that get a "did you mean" or the list of allowed keys.
const HINT_LIMIT: usize = 64;

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
    pub fn value_origin(&self, path: &KeyPath) -> Origin {
        self.origin(path, true)
    }

    /// Where the key at `path` is written.
    pub fn key_origin(&self, path: &KeyPath) -> Origin {
        self.origin(path, false)
    }

    fn origin(&self, path: &KeyPath, value_first: bool) -> Origin {
        let (first, second) = if value_first {
            (&self.values, &self.keys)
        } else {
            (&self.keys, &self.values)
        };
        let mut p = path.clone();
        loop {
            if let Some(var) = self.env.get(&p) {
                return Origin::Env(var.clone());
            }
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

/// A parsed, interpolated and overlaid config with its positions, and the problems found
/// on the way (compile reports them together with its own).
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    /// Where each line of `text` starts, for snippets.
    pub lines: LineIndex,
    /// The config, less unknown keys and values of the wrong type.
    pub raw: RawConfig,
    pub map: SourceMap,
    /// Unknown keys, failed `${VAR}` references and type errors, already located.
    pub problems: Vec<Diagnostic>,
    /// Values that already have a problem in `problems`: later checks stay silent there,
    /// so each mistake is reported once.
    pub reported: HashSet<KeyPath>,
    /// Entries of the named sections (`templates.t`) left out for a type error: their names
    /// still count as defined, so references to them are not reported as unknown.
    pub unreadable: BTreeSet<KeyPath>,
}

/// Read and parse `path` with the process environment.
pub fn read(path: &Path) -> Result<Source, ConfigErrors> {
    let text = read_text(path)?;
    parse(path, &text, &|name| std::env::var(name).ok())
}

/// The text of the config file at `path`: a regular file of at most `MAX_CONFIG_BYTES`, in
/// UTF-8. Startup, `herald check` and reloads all read through here.
pub fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    let refuse = |message: String| ConfigErrors::whole(path, message);
    // Look before opening: opening a FIFO blocks until a writer appears.
    let meta =
        std::fs::metadata(path).map_err(|e| refuse(format!("cannot read config file: {e}")))?;
    check_regular(&meta).map_err(refuse)?;
    let file =
        std::fs::File::open(path).map_err(|e| refuse(format!("cannot read config file: {e}")))?;
    // Look again at what was opened, in case the path changed in between.
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("cannot read config file: {e}")))?;
    check_regular(&meta).map_err(refuse)?;
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_CONFIG_BYTES) as usize);
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot read config file: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(refuse(too_large()));
    }
    String::from_utf8(bytes).map_err(|e| {
        refuse(format!(
            "config file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Refuse anything but a regular file within the size cap.
fn check_regular(meta: &std::fs::Metadata) -> Result<(), String> {
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err("not a config file: it is a directory".into());
    }
    if !kind.is_file() {
        return Err(format!(
            "not a config file: it is a {} (a regular file is required)",
            special_kind(&kind)
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    Ok(())
}

fn too_large() -> String {
    format!(
        "config file is larger than {} MiB; refused",
        MAX_CONFIG_BYTES / (1024 * 1024)
    )
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "FIFO (named pipe)"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "special file"
}

/// Parse `text` (the contents of `path`). `lookup` resolves `${VAR}` references.
///
/// Only a file that cannot be read as a YAML mapping at all is an `Err` here; every other
/// problem is collected in `Source::problems`, with the offending value left out.
pub fn parse(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, ConfigErrors> {
    let file = path.to_path_buf();
    let lines = LineIndex::new(text);
    // 1. YAML syntax → JSON tree.
    let tree: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str::<Value>(text).map_err(|e| yaml_error(&file, text, &e))?
    };
    let mut tree = match tree {
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
    let mut problems = Problems {
        map: &map,
        text,
        lines: &lines,
        found: Vec::new(),
        reported: HashSet::new(),
    };

    // 2. Unknown keys, all of them, with suggestions; they are dropped from the tree so
    //    that everything else is still checked.
    let schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default();
    unknown_keys(
        &mut tree,
        &schema,
        &schema,
        &mut KeyPath::root(),
        &mut problems,
    );

    // 3. ${VAR} interpolation in every string value.
    interpolate_tree(&mut tree, &mut KeyPath::root(), lookup, &mut problems);

    // 4. HERALD_ environment overrides, layered with figment; the keys they add are
    //    checked like the file's.
    let mut merged: Value = Figment::from(Serialized::defaults(&tree))
        .merge(Env::prefixed(ENV_PREFIX).split("__").filter(|k| {
            !ENV_NOT_OVERRIDES
                .iter()
                .any(|n| k.as_str().eq_ignore_ascii_case(n))
        }))
        .extract()
        .map_err(|e| ConfigErrors::whole(&file, format!("cannot apply HERALD_ overrides: {e}")))?;
    unknown_keys(
        &mut merged,
        &schema,
        &schema,
        &mut KeyPath::root(),
        &mut problems,
    );

    // 5. Typed extraction; a value of the wrong type is reported and dropped, then again.
    let mut unreadable = BTreeSet::new();
    let raw = extract(&mut merged, &mut problems, &mut unreadable)?;
    let Problems {
        found, reported, ..
    } = problems;
    Ok(Source {
        path: file,
        text: text.to_string(),
        lines,
        raw,
        map,
        problems: found,
        reported,
        unreadable,
    })
}

/// Problems found while reading, with what is needed to locate them.
struct Problems<'a> {
    map: &'a SourceMap,
    text: &'a str,
    lines: &'a LineIndex,
    found: Vec<Diagnostic>,
    reported: HashSet<KeyPath>,
}

impl Problems<'_> {
    fn at_value(&mut self, path: &KeyPath, message: String) {
        let d = Diagnostic::new(self.map.value_origin(path), message)
            .with_snippet(self.lines, self.text);
        self.found.push(d);
        self.reported.insert(path.clone());
    }

    fn at_key(&mut self, path: &KeyPath, message: String) {
        let d =
            Diagnostic::new(self.map.key_origin(path), message).with_snippet(self.lines, self.text);
        self.found.push(d);
    }
}

/// `RawConfig` from `tree`. Each type error is reported at its value, the value is removed
/// (its default applies, or its entry is left out), and extraction runs again, at most
/// `MAX_TYPE_ERRORS` times.
fn extract(
    tree: &mut Value,
    problems: &mut Problems<'_>,
    unreadable: &mut BTreeSet<KeyPath>,
) -> Result<RawConfig, ConfigErrors> {
    // Values removed so far: a "missing field" for one of them is its own consequence.
    let mut removed: HashSet<KeyPath> = HashSet::new();
    for _ in 0..MAX_TYPE_ERRORS {
        let err = match Figment::from(Serialized::defaults(&*tree)).extract::<RawConfig>() {
            Ok(raw) => return Ok(raw),
            Err(e) => e,
        };
        let path = KeyPath::from(err.path.clone());
        let consequence = matches!(&err.kind, figment::error::Kind::MissingField(f)
            if removed.contains(&path.child(f.as_ref())));
        if !consequence {
            problems.at_value(&path, describe_figment(&err));
        }
        // Remove the value (or, inside a list, the whole list), and note entries of the
        // named sections that go with it.
        let Some(gone) = remove(tree, &path) else {
            break;
        };
        if gone.len() == 2 {
            unreadable.insert(gone.clone());
        }
        removed.insert(gone);
    }
    let mut found = std::mem::take(&mut problems.found);
    if found.is_empty() {
        found.push(Diagnostic::new(
            Origin::Whole(problems.map.file.clone()),
            "the config could not be read",
        ));
    }
    Err(ConfigErrors::new(found))
}

/// Remove the value at `path` from `tree` (the enclosing list when `path` points into one);
/// the path removed, or `None` when there is nothing to remove.
fn remove(tree: &mut Value, path: &KeyPath) -> Option<KeyPath> {
    // The longest prefix of `path` whose last step is a mapping key.
    let segments = path.segments();
    let mut node: &Value = tree;
    let mut last_key = None;
    for (i, segment) in segments.iter().enumerate() {
        node = match node {
            Value::Object(fields) => {
                last_key = Some(i);
                fields.get(segment)?
            }
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => break,
        };
    }
    let end = last_key?;
    let target = KeyPath::from(segments[..=end].to_vec());
    let mut node = tree;
    for segment in &segments[..end] {
        node = match node {
            Value::Object(fields) => fields.get_mut(segment)?,
            Value::Array(items) => items.get_mut(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match node {
        Value::Object(fields) => fields.remove(&segments[end]).map(|_| target),
        _ => None,
    }
}

fn describe_figment(err: &figment::Error) -> String {
    let key = err.path.join(".");
    let kind = match &err.kind {
        figment::error::Kind::UnknownVariant(found, expected) => {
            let expected: Vec<String> = expected.iter().map(|v| format!("`{v}`")).collect();
            format!(
                "unknown value `{found}`; use one of {}",
                expected.join(", ")
            )
        }
        kind => kind.to_string(),
    };
    if key.is_empty() {
        kind
    } else {
        format!("`{key}`: {kind}")
    }
}

fn yaml_error(file: &Path, text: &str, e: &serde_saphyr::Error) -> ConfigErrors {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("invalid YAML");
    let origin = match e.location() {
        Some(loc) if loc.line() > 0 => Origin::File {
            path: file.to_path_buf(),
            line: loc.line() as usize,
            column: loc.column().max(1) as usize,
        },
        _ => Origin::Whole(file.to_path_buf()),
    };
    let message = match origin {
        // The origin carries the position: drop saphyr's own "error: line L column C: ".
        Origin::File { .. } => strip_position(first),
        _ => first,
    };
    ConfigErrors::one(Diagnostic::new(origin, format!("invalid YAML: {message}")).with_source(text))
}

/// `error: line 3 column 16: unclosed bracket` → `unclosed bracket`; a trailing
/// ` at line L column C` goes too.
fn strip_position(message: &str) -> &str {
    let mut m = message.trim();
    loop {
        let before = m;
        if let Some(rest) = m.strip_prefix("error:") {
            m = rest.trim_start();
        }
        if let Some(rest) = m.strip_prefix("line ")
            && let Some((pos, rest)) = rest.split_once(':')
            && is_line_column(pos)
        {
            m = rest.trim_start();
        }
        if m == before {
            break;
        }
    }
    if let Some((head, pos)) = m.rsplit_once(" at line ")
        && is_line_column(pos)
    {
        m = head;
    }
    if m.is_empty() { message } else { m }
}

/// `3 column 16`: a position as saphyr writes it (after "line ").
fn is_line_column(s: &str) -> bool {
    match s.trim().split_once(" column ") {
        Some((l, c)) => {
            !l.is_empty()
                && !c.is_empty()
                && l.chars().all(|ch| ch.is_ascii_digit())
                && c.chars().all(|ch| ch.is_ascii_digit())
        }
        None => false,
    }
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
                map.keys.insert(path.child(&name), at);
                *key = Some(name);
                if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
                    // A complex key: skip its contents by tracking it as an anonymous frame.
                    stack.push(Frame::Seq {
                        path: KeyPath::root().child("?"),
                        next: 0,
                    });
                }
                continue;
            }
            let path: KeyPath = match stack.last_mut() {
                Some(Frame::Map { path, key }) => path.child(key.take().unwrap_or_default()),
                Some(Frame::Seq { path, next }) => {
                    *next += 1;
                    path.child(*next - 1)
                }
                None => KeyPath::root(),
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
            let path = KeyPath::from(
                rest.split("__")
                    .map(|s| s.to_ascii_lowercase())
                    .collect::<Vec<_>>(),
            );
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

/// Report every key of `value` the schema does not allow, and remove it from `value`.
fn unknown_keys(
    value: &mut Value,
    schema: &Value,
    root: &Value,
    path: &mut KeyPath,
    problems: &mut Problems<'_>,
) {
    let schema = resolve(schema, root);
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let closed = matches!(additional, Some(Value::Bool(false)));
            let unknown: HashSet<String> = if closed {
                fields
                    .keys()
                    .filter(|k| !props.is_some_and(|p| p.contains_key(*k)))
                    .cloned()
                    .collect()
            } else {
                HashSet::new()
            };
            // Hints help with a typo or two; a mapping full of strangers gets none (and
            // the work per key stays constant).
            let allowed: Vec<&str> = if unknown.len() <= HINT_LIMIT {
                props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            for (key, child) in fields.iter_mut() {
                path.push(key.clone());
                if unknown.contains(key) {
                    problems.at_key(path, unknown_key_message(key, path, &allowed));
                } else if let Some(child_schema) = props.and_then(|p| p.get(key)) {
                    unknown_keys(child, child_schema, root, path, problems);
                } else if let Some(s @ Value::Object(_)) = additional {
                    unknown_keys(child, s, root, path, problems);
                }
                path.pop();
            }
            if !unknown.is_empty() {
                fields.retain(|key, _| !unknown.contains(key));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, child) in items.iter_mut().enumerate() {
                    path.push(i.to_string());
                    unknown_keys(child, item_schema, root, path, problems);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn unknown_key_message(key: &str, path: &KeyPath, allowed: &[&str]) -> String {
    let section = match path.parent() {
        Some(parent) if !parent.is_empty() => format!(" in `{parent}`"),
        _ => String::new(),
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
    problems: &mut Problems<'_>,
) {
    match value {
        Value::String(s) => match interpolate(s, lookup) {
            Ok(Some(new)) => *s = new,
            Ok(None) => {}
            Err(message) => problems.at_value(path, message),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate_tree(item, path, lookup, problems);
                path.pop();
            }
        }
        Value::Object(fields) => {
            for (k, item) in fields.iter_mut() {
                path.push(k.clone());
                interpolate_tree(item, path, lookup, problems);
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

    /// What reading `text` found: the fatal error, or the problems collected on the way.
    fn problems(text: &str) -> Vec<String> {
        let found = match parse(Path::new("f.yaml"), text, &env(&[])) {
            Ok(src) => src.problems,
            Err(e) => e.diagnostics,
        };
        ConfigErrors::new(found)
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect()
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
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("f.yaml:9:16: environment variable `NOPE_KEY`"),
            "{found:?}"
        );
    }

    #[test]
    fn unknown_keys_are_all_reported_with_hints() {
        let text = "shedules: {}\nhttp:\n  lisen: 1.2.3.4:5\n  cors: {allowed_origin: []}\n";
        assert_eq!(
            problems(text),
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
    fn yaml_syntax_error_names_its_position_once() {
        let found = problems("hubs:\n  h: {}\nhttp:\n  listen: [1, 2\n");
        assert_eq!(found, ["f.yaml:4:11: invalid YAML: unclosed bracket '['"]);
        let found = problems("hubs:\n  h: {}\nhttp:\n  listen: a: b\n");
        assert_eq!(
            found,
            ["f.yaml:4:12: invalid YAML: mapping values are not allowed in this context"]
        );
        assert_eq!(
            strip_position("error: line 3 column 16: bad thing at line 3 column 16"),
            "bad thing"
        );
        assert_eq!(strip_position("line one: two"), "line one: two");
    }

    #[test]
    fn a_type_error_drops_only_its_value() {
        // A wrong type in a field with a default: that field is reported and the rest of the
        // entry is kept (`hub` still reads `h`).
        let text = "schedules:\n  s:\n    cron: '* * * * * *'\n    hub: h\n    template: t\n    run_on_startup: sometimes\nhttp:\n  listen: [1]\n";
        let src = parse(Path::new("f.yaml"), text, &env(&[])).unwrap();
        assert_eq!(src.problems.len(), 2, "{:?}", src.problems);
        assert_eq!(src.raw.schedules["s"].hub, "h");
        assert_eq!(src.raw.http.listen, "127.0.0.1:7071");
        // A wrong type in a required field: one error, and the entry is left out but known.
        let text = "templates:\n  t:\n    target: [1]\n  u:\n    target: ok\n";
        let src = parse(Path::new("f.yaml"), text, &env(&[])).unwrap();
        let found: Vec<String> = src.problems.iter().map(|d| d.to_string()).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("f.yaml:3:13: `templates.t.target`"),
            "{found:?}"
        );
        assert!(!src.raw.templates.contains_key("t"));
        assert!(src.raw.templates.contains_key("u"));
        assert!(src.unreadable.contains(&KeyPath::from(["templates", "t"])));
    }

    #[test]
    fn unknown_keys_do_not_hide_type_errors() {
        let text = "hubz: {}\nschedules:\n  s:\n    cron: '* * * * * *'\n    hub: h\n    template: t\n    run_on_startup: sometimes\n";
        let found = problems(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("unknown key `hubz`"), "{found:?}");
        assert!(
            found[1].contains("`schedules.s.run_on_startup`"),
            "{found:?}"
        );
    }

    #[test]
    fn reads_are_bounded_to_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_text(dir.path()).unwrap_err().to_string();
        assert!(err.contains("it is a directory"), "{err}");
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let err = read_text(&big).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: ", big.display())), "{err}");
        assert!(err.contains("larger than 4 MiB"), "{err}");
        let exact = dir.path().join("exact.yaml");
        std::fs::write(&exact, vec![b'#'; MAX_CONFIG_BYTES as usize]).unwrap();
        assert_eq!(read_text(&exact).unwrap().len(), MAX_CONFIG_BYTES as usize);
        let binary = dir.path().join("bin.yaml");
        std::fs::write(&binary, [b'a', 0xff, b'b']).unwrap();
        let err = read_text(&binary).unwrap_err().to_string();
        assert!(
            err.contains("not UTF-8 text (invalid byte at offset 1)"),
            "{err}"
        );
        #[cfg(unix)]
        {
            let err = read_text(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(err.contains("character device"), "{err}");
        }
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let text = "schedules:\n  s:\n    cron: '* * * * * *'\n    hub: h\n    template: t\n    run_on_startup: sometimes\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("f.yaml:6:21: `schedules.s.run_on_startup`"),
            "{found:?}"
        );
    }
    // The `HERALD_` environment overlay is tested in tests/cli_check.rs, in child processes:
    // setting variables here would leak into every test that parses at the same time.
}
