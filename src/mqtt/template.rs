//! The small part of Home Assistant's Jinja templates that discovery
//! payloads use in practice (Zigbee2MQTT and most devices):
//! `{{ value }}`, `{{ value_json.a.b }}`, `{{ value_json['a'] }}`,
//! `{{ position }}`, with the filters `int`, `float`, `round(n)`, `lower`,
//! `upper`, `string`, `trim`, `abs` and `default(x)`, inside literal text
//! (`{"position": {{ position }}}`). Anything else (`{% %}` blocks,
//! conditionals, arithmetic) is refused with `None`, and the caller falls
//! back to the raw payload.

use serde_json::{Map, Value};

/// Renders `tpl` with `vars`; `None` if it uses what is not supported.
pub fn render(tpl: &str, vars: &Map<String, Value>) -> Option<String> {
    if tpl.contains("{%") {
        return None;
    }
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let j = rest[i..].find("}}")? + i;
        let v = eval(rest[i + 2..j].trim(), vars)?;
        out.push_str(&to_text(&v));
        rest = &rest[j + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// The template's value for a state message: `value` is the payload,
/// `value_json` the payload parsed as JSON (when it is JSON).
pub fn render_value(tpl: &str, payload: &str) -> Option<String> {
    let mut vars = Map::new();
    vars.insert("value".into(), Value::String(payload.to_string()));
    if let Ok(j) = serde_json::from_str::<Value>(payload) {
        vars.insert("value_json".into(), j);
    }
    render(tpl, &vars).map(|s| s.trim().to_string())
}

fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn eval(expr: &str, vars: &Map<String, Value>) -> Option<Value> {
    let mut parts = split_filters(expr)?.into_iter();
    let mut v = path(parts.next()?.trim(), vars)?;
    for f in parts {
        v = filter(f.trim(), v)?;
    }
    Some(v)
}

/// Splits on `|` outside quotes and parentheses.
fn split_filters(expr: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    for (i, c) in expr.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth -= 1,
            (None, '|') if depth == 0 => {
                out.push(&expr[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quote.is_some() || depth != 0 {
        return None;
    }
    out.push(&expr[start..]);
    Some(out)
}

/// `name(.field | ['key'] | [n])*`; an unknown variable or a missing field
/// is undefined (`Null`), as in Jinja.
fn path(p: &str, vars: &Map<String, Value>) -> Option<Value> {
    if let Some(l) = literal(p) {
        return Some(l);
    }
    let name_end = p
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(p.len());
    let (name, mut rest) = p.split_at(name_end);
    if name.is_empty() {
        return None;
    }
    let mut v = vars.get(name).cloned().unwrap_or(Value::Null);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            v = v.get(&r[..end]).cloned().unwrap_or(Value::Null);
            rest = &r[end..];
        } else {
            let r = rest.strip_prefix('[')?;
            let end = r.find(']')?;
            let key = r[..end].trim();
            v = match literal(key)? {
                Value::String(k) => v.get(&k).cloned().unwrap_or(Value::Null),
                Value::Number(n) => v.get(n.as_u64()? as usize).cloned().unwrap_or(Value::Null),
                _ => return None,
            };
            rest = &r[end + 1..];
        }
    }
    Some(v)
}

fn literal(s: &str) -> Option<Value> {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')))
    {
        return Some(Value::String(s[1..s.len() - 1].to_string()));
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(f) = s.parse::<f64>() {
        return serde_json::Number::from_f64(f).map(Value::Number);
    }
    match s {
        "true" | "True" => Some(Value::Bool(true)),
        "false" | "False" => Some(Value::Bool(false)),
        "none" | "None" => Some(Value::Null),
        _ => None,
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(*b as u8 as f64),
        _ => None,
    }
}

fn filter(f: &str, v: Value) -> Option<Value> {
    let (name, arg) = match f.split_once('(') {
        Some((n, a)) => (n.trim(), Some(a.strip_suffix(')')?.trim())),
        None => (f, None),
    };
    Some(match name {
        // Jinja's int/float give 0 for what does not parse
        "int" => Value::from(num(&v).map_or(0, |x| x.trunc() as i64)),
        "float" => {
            serde_json::Number::from_f64(num(&v).unwrap_or(0.0)).map_or(Value::Null, Value::Number)
        }
        "round" => {
            let n = arg
                .filter(|a| !a.is_empty())
                .map_or(Some(0), |a| a.parse::<i32>().ok())?;
            let x = num(&v)?;
            let m = 10f64.powi(n);
            let r = (x * m).round() / m;
            if n == 0 {
                Value::from(r as i64)
            } else {
                serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number)
            }
        }
        "abs" => serde_json::Number::from_f64(num(&v)?.abs()).map_or(Value::Null, Value::Number),
        "lower" => Value::String(to_text(&v).to_lowercase()),
        "upper" => Value::String(to_text(&v).to_uppercase()),
        "string" => Value::String(to_text(&v)),
        "trim" => Value::String(to_text(&v).trim().to_string()),
        "default" | "d" => {
            if v.is_null() {
                literal(arg?)?
            } else {
                v
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_discovery_templates() {
        let p = r#"{"state":"ON","brightness":128,"nested":{"t":21.46},"list":[5,6]}"#;
        assert_eq!(render_value("{{ value_json.state }}", p).unwrap(), "ON");
        assert_eq!(
            render_value("{{ value_json['state'] | lower }}", p).unwrap(),
            "on"
        );
        assert_eq!(
            render_value("{{ value_json.nested.t | round(1) }}", p).unwrap(),
            "21.5"
        );
        assert_eq!(
            render_value("{{ value_json.brightness|int }}", p).unwrap(),
            "128"
        );
        assert_eq!(render_value("{{ value_json.list[1] }}", p).unwrap(), "6");
        assert_eq!(
            render_value("{{ value_json.missing | default('off') }}", p).unwrap(),
            "off"
        );
        assert_eq!(render_value("{{ value_json.missing }}", p).unwrap(), "");
        assert_eq!(render_value("{{ value | upper }}", "open").unwrap(), "OPEN");
        assert_eq!(render_value("{{ value | float }}", "19").unwrap(), "19.0");
        let mut vars = Map::new();
        vars.insert("position".into(), Value::from(40));
        assert_eq!(
            render(r#"{"position": {{ position }}}"#, &vars).unwrap(),
            r#"{"position": 40}"#
        );
    }

    #[test]
    fn unsupported_templates_are_refused() {
        assert!(render_value("{% if value == 'ON' %}on{% endif %}", "ON").is_none());
        assert!(render_value("{{ value_json.a | tojson }}", "{}").is_none());
        assert!(render_value("{{ value_json.a + 1 }}", "{}").is_none());
        assert!(render_value("{{ value_json.a", "{}").is_none());
    }
}
