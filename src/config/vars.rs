//! `${VAR}` in config values: [`expand`] for one string, [`interpolate`]
//! over a whole TOML tree, every problem collected with its key path.

use super::Problems;

/// Expands `${VAR}` in every string value (see [`expand`]).
pub(super) fn interpolate(
    v: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) {
    match v {
        toml::Value::String(s) => match expand(s, env) {
            Ok(n) => *s = n,
            Err(e) => p.add(path, e),
        },
        toml::Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                interpolate(x, &format!("{path}[{i}]"), env, p);
            }
        }
        toml::Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                interpolate(x, &format!("{path}.{k}"), env, p);
            }
        }
        _ => {}
    }
}

/// Expands `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`.
///
/// ```
/// use hearth::config::expand;
/// let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_string());
/// assert_eq!(expand("Bearer ${TOKEN}", &env).unwrap(), "Bearer s3cret");
/// assert_eq!(expand("${PORT:-18789}", &env).unwrap(), "18789");
/// assert_eq!(expand("$${TOKEN}", &env).unwrap(), "${TOKEN}");
/// assert!(expand("${MISSING}", &env).unwrap_err().contains("MISSING"));
/// ```
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unclosed ${ in value".to_string())?;
            let name = &tail[..end];
            let (name, default) = match name.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (name, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("${{{name}}} is not a valid variable name"));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a fallback)"
                    ))
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}
