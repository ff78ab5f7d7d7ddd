//! `response_format: {"type": "json_schema"}`: a JSON Schema turned into a GBNF grammar, so the
//! embedded engine can only produce JSON that fits it.
//!
//! The subset is what OpenAI's strict structured outputs use: `type` (object, array, string,
//! number, integer, boolean, null, or a list of them), `properties`, `required`,
//! `additionalProperties: false`, `items`, `enum`, `const`, `anyOf`, and the annotations `title`,
//! `description`, `default`, `$schema`. Every property is emitted, in key order (strict mode
//! requires them all; an answer with an optional one present still fits).
//! Anything else (`pattern`, `format`, `minLength`, `$ref`, …) is refused by name: a constraint
//! the grammar does not enforce would be a promise the engine does not keep.

use serde_json::Value;

/// Why a schema cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {why}")]
pub struct SchemaError {
    /// Where in the schema (`schema.properties.name`, …).
    pub path: String,
    /// What is wrong or unsupported.
    pub why: String,
}

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &["title", "description", "default", "$schema", "examples"];

/// Most rules a schema may need (a bound against pathological nesting).
const MAX_RULES: usize = 512;

/// The GBNF grammar whose root is exactly the JSON values `schema` accepts.
pub fn grammar(schema: &Value) -> Result<String, SchemaError> {
    let (root, rules) = rules(schema, "schema", "r")?;
    Ok(format!("root ::= {root}\n{rules}{BASICS}"))
}

/// The pieces to embed a schema in a larger grammar: the expression for its values and the
/// rules that expression uses (named `{prefix}0`, `{prefix}1`, …, so several schemas can share
/// one grammar). The caller appends [`BASICS`] once. `path` names the schema in errors.
pub fn rules(schema: &Value, path: &str, prefix: &str) -> Result<(String, String), SchemaError> {
    let mut g = Grammar {
        prefix: prefix.to_string(),
        rules: Vec::new(),
    };
    let root = g.value(schema, path)?;
    let mut out = String::new();
    for (name, body) in &g.rules {
        out.push_str(&format!("{name} ::= {body}\n"));
    }
    Ok((root, out))
}

/// Any JSON object (`any-object`), for values no schema describes; uses [`BASICS`].
pub const ANY_OBJECT: &str = r#"any-object ::= "{" ws ( json-string ":" ws any-value ( "," ws json-string ":" ws any-value )* )? "}" ws
any-array ::= "[" ws ( any-value ( "," ws any-value )* )? "]" ws
any-value ::= any-object | any-array | json-string | json-number | json-boolean | json-null
"#;

/// The rules every schema grammar shares: JSON strings, numbers, whitespace.
pub const BASICS: &str = r#"ws ::= ( " " | "\n" [ \t]{0,20} )?
json-string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\"" ws
json-integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ws
json-number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,4} )? ws
json-boolean ::= ( "true" | "false" ) ws
json-null ::= "null" ws
"#;

struct Grammar {
    prefix: String,
    rules: Vec<(String, String)>,
}

impl Grammar {
    /// Adds a rule; returns its name.
    fn rule(&mut self, body: String, path: &str) -> Result<String, SchemaError> {
        if self.rules.len() >= MAX_RULES {
            return Err(err(
                path,
                format!("needs more than {MAX_RULES} grammar rules"),
            ));
        }
        let name = format!("{}{}", self.prefix, self.rules.len());
        self.rules.push((name.clone(), body));
        Ok(name)
    }

    /// The grammar expression for the values `schema` accepts.
    fn value(&mut self, schema: &Value, path: &str) -> Result<String, SchemaError> {
        let obj = match schema {
            Value::Bool(true) => {
                return Err(err(
                    path,
                    "`true` (anything) cannot be enforced; give a type",
                ))
            }
            Value::Object(o) => o,
            _ => return Err(err(path, "must be a schema object")),
        };
        let known = [
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "enum",
            "const",
            "anyOf",
        ];
        if let Some(k) = obj
            .keys()
            .find(|k| !known.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(err(path, format!("keyword `{k}` is not supported")));
        }
        if let Some(c) = obj.get("const") {
            return Ok(literal(c));
        }
        if let Some(e) = obj.get("enum") {
            let values = e
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| err(path, "`enum` must be a non-empty array"))?;
            let alts: Vec<String> = values.iter().map(literal).collect();
            return Ok(format!("( {} )", alts.join(" | ")));
        }
        if let Some(any) = obj.get("anyOf") {
            let options = any
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| err(path, "`anyOf` must be a non-empty array"))?;
            let mut alts = Vec::new();
            for (i, o) in options.iter().enumerate() {
                alts.push(self.value(o, &format!("{path}.anyOf[{i}]"))?);
            }
            return Ok(format!("( {} )", alts.join(" | ")));
        }
        let types: Vec<&str> = match obj.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(err(path, "`type` must be a string or a list of strings")),
            None => return Err(err(path, "needs a `type` (or `enum`, `const`, `anyOf`)")),
        };
        if types.is_empty() {
            return Err(err(path, "`type` lists no type"));
        }
        let mut alts = Vec::new();
        for t in types {
            alts.push(match t {
                "string" => "json-string".to_string(),
                "integer" => "json-integer".to_string(),
                "number" => "json-number".to_string(),
                "boolean" => "json-boolean".to_string(),
                "null" => "json-null".to_string(),
                "object" => self.object(obj, path)?,
                "array" => {
                    let items = obj
                        .get("items")
                        .ok_or_else(|| err(path, "an array needs `items`"))?;
                    let item = self.value(items, &format!("{path}.items"))?;
                    let body = format!(r#""[" ws ( {item} ( "," ws {item} )* )? "]" ws"#);
                    self.rule(body, path)?
                }
                other => {
                    return Err(err(
                        path,
                        format!("type `{other}` is not a JSON Schema type"),
                    ))
                }
            });
        }
        Ok(match alts.as_slice() {
            [one] => one.clone(),
            _ => format!("( {} )", alts.join(" | ")),
        })
    }

    /// An object with every listed property, in order, and nothing else.
    fn object(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        path: &str,
    ) -> Result<String, SchemaError> {
        if let Some(extra) = obj.get("additionalProperties") {
            if extra != &Value::Bool(false) {
                return Err(err(
                    path,
                    "`additionalProperties` must be false (other properties cannot be enforced)",
                ));
            }
        }
        let empty = serde_json::Map::new();
        let props = match obj.get("properties") {
            Some(Value::Object(p)) => p,
            Some(_) => return Err(err(path, "`properties` must be an object")),
            None => &empty,
        };
        if let Some(req) = obj.get("required") {
            let names = req
                .as_array()
                .ok_or_else(|| err(path, "`required` must be an array of property names"))?;
            for n in names {
                let n = n
                    .as_str()
                    .ok_or_else(|| err(path, "`required` must be an array of property names"))?;
                if !props.contains_key(n) {
                    return Err(err(
                        path,
                        format!("`required` names `{n}`, which is not a property"),
                    ));
                }
            }
        }
        let mut members = Vec::new();
        for (name, schema) in props {
            let value = self.value(schema, &format!("{path}.properties.{name}"))?;
            let key = literal(&Value::String(name.clone()));
            members.push(format!(r#"{key} ":" ws {value}"#));
        }
        let body = match members.is_empty() {
            true => r#""{" ws "}" ws"#.to_string(),
            false => format!(r#""{{" ws {} "}}" ws"#, members.join(r#" "," ws "#)),
        };
        self.rule(body, path)
    }
}

/// A GBNF literal matching exactly this JSON value (then whitespace).
fn literal(v: &Value) -> String {
    format!("{} ws", gbnf_string(&v.to_string()))
}

/// A GBNF string literal matching exactly `s`.
pub(crate) fn gbnf_string(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn err(path: &str, why: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_string(),
        why: why.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_strict_object_schema_becomes_rules_in_property_order() {
        let g = grammar(&json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "the capital"},
                "population": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["big", "old"]}},
                "mayor": {"type": ["string", "null"]}
            },
            "required": ["city", "population", "tags", "mayor"],
            "additionalProperties": false
        }))
        .unwrap();
        assert!(g.starts_with("root ::= r1\n"), "{g}");
        assert!(g.contains(r#"r0 ::= "[" ws ( ( "\"big\"" ws | "\"old\"" ws ) ( "," ws ( "\"big\"" ws | "\"old\"" ws ) )* )? "]" ws"#), "{g}");
        assert!(
            g.contains(r#""\"city\"" ws ":" ws json-string "," ws"#),
            "{g}"
        );
        assert!(
            g.contains(r#""\"population\"" ws ":" ws json-integer"#),
            "{g}"
        );
        assert!(g.contains("( json-string | json-null )"), "{g}");
    }

    #[test]
    fn what_cannot_be_enforced_is_refused_by_name() {
        let e = |s: Value| grammar(&s).unwrap_err().to_string();
        assert_eq!(
            e(json!({"type": "string", "pattern": "^a"})),
            "schema: keyword `pattern` is not supported"
        );
        assert_eq!(
            e(json!({"type": "object", "properties": {"a": {"$ref": "#/x"}}})),
            "schema.properties.a: keyword `$ref` is not supported"
        );
        assert_eq!(
            e(json!({"type": "object", "properties": {}, "additionalProperties": true})),
            "schema: `additionalProperties` must be false (other properties cannot be enforced)"
        );
        assert_eq!(
            e(
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]})
            ),
            "schema: `required` names `b`, which is not a property"
        );
        assert_eq!(
            e(json!({"type": "array"})),
            "schema: an array needs `items`"
        );
        assert_eq!(
            e(json!({"type": "date"})),
            "schema: type `date` is not a JSON Schema type"
        );
        assert_eq!(
            e(json!({})),
            "schema: needs a `type` (or `enum`, `const`, `anyOf`)"
        );
        assert_eq!(
            e(json!(true)),
            "schema: `true` (anything) cannot be enforced; give a type"
        );
    }
}
