//! Message templates: compile a template's `target` and `arguments` once, render them with
//! variables into JSON. A string that is exactly one `{{ expr }}` keeps the expression's JSON
//! type (number, bool, object, list); any other string renders as text. Pure: no I/O.
//!
//! Built on minijinja with strict undefined behaviour (a missing variable is an error that
//! names it, never an empty string) and fuel (a template cannot loop forever).

use std::collections::HashSet;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Upper bound on the work one render may do (minijinja fuel units).
const FUEL: u64 = 50_000;

/// A template that failed to compile or render, with minijinja's explanation.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{message}")]
pub struct TemplateError {
    /// Where inside the template (e.g. `arguments[0].status`).
    pub at: String,
    /// What went wrong.
    pub message: String,
    /// The name of a missing variable, when that is the cause.
    pub missing: Option<String>,
}

/// One JSON value with template strings inside, compiled.
#[derive(Debug, Clone)]
enum Node {
    Literal(Value),
    /// A lone `{{ expr }}`: evaluated as an expression, so it keeps its JSON type.
    /// `path` is set when the expression is a plain variable or dotted path (`body.id`):
    /// rendering then looks it up in the variables directly, and only a path that is not
    /// there goes through minijinja (for its exact error).
    Expression {
        source: String,
        path: Option<Vec<String>>,
    },
    /// Any other string with template syntax, rendered as text.
    Text(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A compiled set of template strings sharing one environment.
#[derive(Debug)]
pub struct Compiled {
    env: Environment<'static>,
    root: Node,
    /// The top-level variables its strings read (`status` for `{{ status.code }}`); None
    /// when that cannot be known (a template that includes or imports another).
    roots: Option<HashSet<String>>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
}

/// If `s` is exactly one `{{ expression }}`, return the expression.
fn lone_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start_matches('-').trim_end_matches('-');
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

fn has_syntax(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

impl Compiled {
    /// Compile every string inside `value`. Errors name the path inside the value.
    pub fn new(value: &Value) -> Result<Self, TemplateError> {
        let mut env = environment();
        let mut counter = 0usize;
        let mut roots = Some(HashSet::new());
        let root = compile_node(&mut env, value, "", &mut counter, &mut roots)?;
        Ok(Compiled { env, root, roots })
    }

    /// Whether rendering may read the top-level variable `name`: callers skip building
    /// variables no string reads.
    pub fn uses(&self, name: &str) -> bool {
        self.roots.as_ref().is_none_or(|roots| roots.contains(name))
    }

    /// Compile a single string (e.g. a `to.user` template).
    pub fn text(source: &str) -> Result<Self, TemplateError> {
        Self::new(&Value::String(source.to_string()))
    }

    /// Render with `vars` (a JSON object of variables).
    pub fn render(&self, vars: &Value) -> Result<Value, TemplateError> {
        let ctx = Context {
            vars,
            value: std::cell::OnceCell::new(),
        };
        render_node(&self.env, &self.root, &ctx, "")
    }

    /// Render and require a string result (used for user, group and connection names).
    pub fn render_string(&self, vars: &Value) -> Result<String, TemplateError> {
        match self.render(vars)? {
            Value::String(s) => Ok(s),
            Value::Null => Err(TemplateError {
                at: String::new(),
                message: "rendered to null".into(),
                missing: None,
            }),
            other => Ok(other.to_string()),
        }
    }
}

fn compile_node(
    env: &mut Environment<'static>,
    value: &Value,
    at: &str,
    counter: &mut usize,
    roots: &mut Option<HashSet<String>>,
) -> Result<Node, TemplateError> {
    Ok(match value {
        Value::String(s) if has_syntax(s) => {
            *counter += 1;
            let name = format!("{}#{}", if at.is_empty() { "value" } else { at }, counter);
            match lone_expression(s) {
                Some(expr) => {
                    let read = env
                        .compile_expression_owned(expr.to_string())
                        .map_err(|e| to_error(at, &e))?
                        .undeclared_variables(false);
                    if let Some(roots) = roots {
                        roots.extend(read);
                    }
                    Node::Expression {
                        source: expr.to_string(),
                        path: variable_path(expr),
                    }
                }
                None => {
                    env.add_template_owned(name.clone(), s.clone())
                        .map_err(|e| to_error(at, &e))?;
                    // Another template's reads are not this one's undeclared variables.
                    let refers = ["include", "import", "extends"]
                        .iter()
                        .any(|tag| s.contains(tag));
                    match (roots.as_mut(), env.get_template(&name)) {
                        (Some(known), Ok(t)) if !refers => {
                            known.extend(t.undeclared_variables(false));
                        }
                        _ => *roots = None,
                    }
                    Node::Text(name)
                }
            }
        }
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| compile_node(env, v, &format!("{at}[{i}]"), counter, roots))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(k, v)| {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    compile_node(env, v, &path, counter, roots).map(|n| (k.clone(), n))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => Node::Literal(other.clone()),
    })
}

/// The variables of one render, converted for minijinja only if a node needs it.
struct Context<'a> {
    vars: &'a Value,
    value: std::cell::OnceCell<minijinja::Value>,
}

impl Context<'_> {
    fn minijinja(&self) -> &minijinja::Value {
        self.value
            .get_or_init(|| minijinja::Value::from(minijinja::value::Serde(self.vars)))
    }

    /// The value at `path`, through objects only.
    fn lookup(&self, path: &[String]) -> Option<&Value> {
        path.iter()
            .try_fold(self.vars, |value, key| value.as_object()?.get(key))
    }
}

/// `expr` as a variable path (`status`, `body.order.id`): identifiers joined by dots, none
/// of them a literal minijinja reads differently (`true`, `none`, ...).
fn variable_path(expr: &str) -> Option<Vec<String>> {
    const LITERALS: [&str; 6] = ["true", "false", "none", "True", "False", "None"];
    let segments: Vec<String> = expr.split('.').map(str::to_string).collect();
    let identifier = |s: &String| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !LITERALS.contains(&s.as_str())
    };
    segments.iter().all(identifier).then_some(segments)
}

fn render_node(
    env: &Environment<'static>,
    node: &Node,
    ctx: &Context<'_>,
    at: &str,
) -> Result<Value, TemplateError> {
    Ok(match node {
        Node::Literal(v) => v.clone(),
        Node::Text(name) => Value::String(render_named(env, name, ctx.minijinja(), at)?),
        Node::Expression { source, path } => {
            if let Some(found) = path.as_deref().and_then(|p| ctx.lookup(p)) {
                return Ok(found.clone());
            }
            let expr = env
                .compile_expression_owned(source.clone())
                .map_err(|e| to_error(at, &e))?;
            let value = expr.eval(ctx.minijinja()).map_err(|e| to_error(at, &e))?;
            if value.is_undefined() {
                let name = first_identifier(source).unwrap_or_else(|| source.clone());
                return Err(TemplateError {
                    at: at.to_string(),
                    message: format!("missing variable `{name}`"),
                    missing: Some(name),
                });
            }
            serde_json::to_value(&value).map_err(|e| TemplateError {
                at: at.to_string(),
                message: format!("expression did not produce JSON: {e}"),
                missing: None,
            })?
        }
        Node::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, n)| render_node(env, n, ctx, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Node::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, n)| {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    render_node(env, n, ctx, &path).map(|v| (k.clone(), v))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn render_named(
    env: &Environment<'static>,
    name: &str,
    ctx: &minijinja::Value,
    at: &str,
) -> Result<String, TemplateError> {
    let template = env.get_template(name).map_err(|e| to_error(at, &e))?;
    template.render(ctx).map_err(|e| to_error(at, &e))
}

fn to_error(at: &str, e: &minijinja::Error) -> TemplateError {
    let missing = if e.kind() == minijinja::ErrorKind::UndefinedError {
        undefined_name(e)
    } else {
        None
    };
    let mut message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(name) = &missing {
        message = format!("missing variable `{name}`");
    }
    TemplateError {
        at: at.to_string(),
        message,
        missing,
    }
}

/// minijinja reports the undefined name in the detail ("`x` is undefined") when it knows it;
/// otherwise pick the first identifier of the failing source range.
fn undefined_name(e: &minijinja::Error) -> Option<String> {
    if let Some(detail) = e.detail()
        && let Some(rest) = detail.strip_prefix('`')
        && let Some((name, _)) = rest.split_once('`')
    {
        return Some(name.to_string());
    }
    let source = e.template_source()?;
    let range = e.range()?;
    first_identifier(source.get(range)?)
}

/// The first identifier in a piece of template source: `order.id | upper` → `order`.
fn first_identifier(snippet: &str) -> Option<String> {
    let ident: String = snippet
        .chars()
        .skip_while(|c| !(c.is_alphabetic() || *c == '_'))
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty()).then_some(ident)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lone_expression_keeps_json_type() {
        let t = Compiled::new(&json!({
            "n": "{{ count }}", "b": "{{ ok }}", "o": "{{ obj }}", "l": "{{ items }}",
            "s": "count={{ count }}", "plain": "hello", "num": 3
        }))
        .unwrap();
        let out = t
            .render(&json!({"count": 5, "ok": true, "obj": {"a": 1}, "items": [1, "x"]}))
            .unwrap();
        assert_eq!(
            out,
            json!({"n": 5, "b": true, "o": {"a": 1}, "l": [1, "x"], "s": "count=5", "plain": "hello", "num": 3})
        );
    }

    #[test]
    fn a_variable_path_renders_as_minijinja_would() {
        let vars = json!({
            "n": 5, "neg": -3, "f": 1.5, "s": "x", "b": false, "nil": null,
            "body": {"order": {"id": "o-1", "items": [1, 2]}}, "true": "shadow"
        });
        for expr in [
            "n",
            "neg",
            "f",
            "s",
            "b",
            "nil",
            "body",
            "body.order",
            "body.order.id",
            "body.order.items",
            "true",
        ] {
            let fast = Compiled::new(&json!(format!("{{{{ {expr} }}}}"))).unwrap();
            let env = environment();
            let slow = env
                .compile_expression(expr)
                .unwrap()
                .eval(minijinja::Value::from(minijinja::value::Serde(&vars)))
                .unwrap();
            assert_eq!(
                fast.render(&vars).unwrap(),
                serde_json::to_value(&slow).unwrap(),
                "{expr}"
            );
        }
        // `true` is minijinja's literal, not the variable named so.
        assert_eq!(variable_path("true"), None);
        assert_eq!(variable_path("body.order.id").map(|p| p.len()), Some(3));
        assert_eq!(variable_path("items[0]"), None);
        assert_eq!(variable_path("a | upper"), None);
        // What the variables lack still fails through minijinja, naming it.
        let missing = Compiled::new(&json!("{{ body.nothing }}")).unwrap();
        assert!(missing.render(&vars).is_err());
        let err = Compiled::new(&json!("{{ absent }}"))
            .unwrap()
            .render(&vars)
            .unwrap_err();
        assert_eq!(err.missing.as_deref(), Some("absent"));
    }

    #[test]
    fn a_template_knows_the_top_level_variables_it_reads() {
        let t = Compiled::new(&json!({
            "code": "{{ status.code }}",
            "text": "order {{ order.id }}{% for x in items %} {{ x }}{% endfor %}",
            "when": "{{ now | default('') }}",
            "plain": "headers"
        }))
        .unwrap();
        for read in ["status", "order", "items", "now"] {
            assert!(t.uses(read), "{read}");
        }
        for unread in ["code", "id", "x", "headers", "query", "params"] {
            assert!(!t.uses(unread), "{unread}");
        }
        // A template that includes or imports another may read anything.
        let t = Compiled::new(&json!("{% include 'other' %}")).unwrap();
        assert!(t.uses("headers"));
        assert!(!Compiled::new(&json!(3)).unwrap().uses("anything"));
    }

    #[test]
    fn default_filter_fills_missing_fields() {
        let t = Compiled::new(&json!("{{ status | default('System operational') }}")).unwrap();
        assert_eq!(t.render(&json!({})).unwrap(), json!("System operational"));
        assert_eq!(
            t.render(&json!({"status": "Degraded"})).unwrap(),
            json!("Degraded")
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let t = Compiled::new(&json!([{"status": "{{ status }}"}])).unwrap();
        let err = t.render(&json!({})).unwrap_err();
        assert_eq!(err.missing.as_deref(), Some("status"));
        assert_eq!(err.at, "[0].status");
        let t = Compiled::new(&json!("order {{ order.id }} is {{ state }}")).unwrap();
        let err = t.render(&json!({"order": {"id": 1}})).unwrap_err();
        assert_eq!(err.missing.as_deref(), Some("state"));
    }

    #[test]
    fn syntax_errors_fail_compile() {
        assert!(Compiled::new(&json!("{{ status ")).is_err());
        assert!(Compiled::new(&json!({"a": "{% if %}"})).is_err());
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = Compiled::new(&json!("{% for i in range(100000) %}{{ i }}{% endfor %}")).unwrap();
        assert!(t.render(&json!({})).is_err());
    }
}
