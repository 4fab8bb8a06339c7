//! One mistake, one problem: sections are deserialized key by key.
//!
//! serde stops at the first error of a struct, so a wrong type for
//! `max_connections` would hide every other problem of `[gateway]` (and let
//! the defaults stand in for keys that were set). Here the error's path
//! (serde_path_to_error) names the key; it is reported, taken out of the
//! value and the section deserialized again, until it fits. Unknown keys and
//! values are reported with the closest known name.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::Problems;

/// Most keys taken out of one section before giving up on it.
const MAX_FIXES: usize = 64;

/// `v` deserialized as `T`, with each key that does not fit reported under
/// `key` (e.g. `gateway.max_connections`) and left out.
pub(super) fn deserialize<T: DeserializeOwned>(
    mut v: toml::Value,
    key: &str,
    p: &mut Problems,
) -> Option<T> {
    // Array elements already taken out, per array path, by original index:
    // later errors are reported with the index the user wrote.
    let mut removed: Vec<(Vec<String>, usize)> = Vec::new();
    // Every path taken out so far (as the value is now).
    let mut taken: Vec<Vec<Seg>> = Vec::new();
    for _ in 0..MAX_FIXES {
        let e = match serde_path_to_error::deserialize::<_, T>(v.clone()) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let segs: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        let raw = super::clean_de(
            &e.inner()
                .to_string()
                .lines()
                .filter(|l| !l.trim_start().starts_with("in `"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        // A required key taken out for its own problem is not also missing.
        let follow_on = raw
            .strip_prefix("missing field ")
            .map(|r| split_expected(r).0)
            .is_some_and(|f| {
                let mut k = segs.clone();
                k.push(Seg::Key(f));
                taken.iter().any(|t| names(t) == names(&k))
            });
        if !follow_on {
            let shown = display(key, &original(&segs, &removed));
            p.add(&shown, explain(&raw));
        }
        taken.push(segs.clone());
        // The path names the key at fault; for a missing field, the table
        // that lacks it. Either is taken out.
        if segs.is_empty() || !remove(&mut v, &segs) {
            return None;
        }
        if let Some(Seg::Index(i)) = segs.last() {
            // paths taken out inside the removed element, or after it in
            // the same array, no longer name what they named
            let n = segs.len() - 1;
            taken.retain(|t| t.len() <= n || names(&t[..n]) != names(&segs[..n]));
            let array = names(&segs[..segs.len() - 1]);
            let orig = original_index(&array, *i, &removed);
            removed.push((array, orig));
        }
    }
    None
}

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn names(segs: &[Seg]) -> Vec<String> {
    segs.iter()
        .map(|s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => format!("[{i}]"),
        })
        .collect()
}

/// The index `i` of the array at `array` had before earlier removals.
fn original_index(array: &[String], i: usize, removed: &[(Vec<String>, usize)]) -> usize {
    let mut gone: Vec<usize> = removed
        .iter()
        .filter(|(a, _)| a.as_slice() == array)
        .map(|(_, o)| *o)
        .collect();
    gone.sort_unstable();
    let mut o = i;
    for g in gone {
        if g <= o {
            o += 1;
        }
    }
    o
}

/// `segs` with every array index mapped back to the user's numbering.
fn original(segs: &[Seg], removed: &[(Vec<String>, usize)]) -> Vec<Seg> {
    let mut out = Vec::with_capacity(segs.len());
    for (n, s) in segs.iter().enumerate() {
        out.push(match s {
            Seg::Index(i) => Seg::Index(original_index(&names(&segs[..n]), *i, removed)),
            k => k.clone(),
        });
    }
    out
}

fn display(key: &str, segs: &[Seg]) -> String {
    let mut s = key.to_string();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Takes the value at `segs` out of `v`; false if it is not there.
fn remove(v: &mut toml::Value, segs: &[Seg]) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur = v;
    for s in parents {
        cur = match (s, cur) {
            (Seg::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(c) => c,
                None => return false,
            },
            (Seg::Index(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(c) => c,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        (Seg::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// serde's message in the config's words, with "did you mean" for unknown
/// keys and values.
fn explain(raw: &str) -> String {
    if let Some(rest) = raw.strip_prefix("unknown field ") {
        let (name, known) = split_expected(rest);
        return match closest(&name, &known) {
            Some(c) => format!("unknown key `{name}` (did you mean `{c}`?)"),
            None if known.is_empty() => format!("unknown key `{name}`"),
            None => format!("unknown key `{name}` (known: {})", known.join(", ")),
        };
    }
    if let Some(rest) = raw.strip_prefix("unknown variant ") {
        let (name, known) = split_expected(rest);
        return match closest(&name, &known) {
            Some(c) => format!("unknown value {name:?} (did you mean {c:?}?)"),
            None => format!(
                "unknown value {name:?} (one of: {})",
                known
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    }
    raw.replace("expected u64", "expected a whole number")
        .replace("expected u32", "expected a whole number")
        .replace("expected f32", "expected a number")
        .replace("expected a boolean", "expected true or false")
}

/// "`x`, expected one of `a`, `b`" → ("x", ["a", "b"]).
fn split_expected(rest: &str) -> (String, Vec<String>) {
    let ticked = |s: &str| -> Vec<String> {
        s.split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, t)| t.to_string())
            .collect()
    };
    match rest.split_once(", expected") {
        Some((name, known)) => (
            ticked(name).into_iter().next().unwrap_or_default(),
            ticked(known),
        ),
        None => (ticked(rest).into_iter().next().unwrap_or_default(), vec![]),
    }
}

/// The known name a typo most likely meant, if one is close.
pub(super) fn closest(name: &str, known: &[impl AsRef<str>]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k.as_ref()), k.as_ref()))
        .filter(|(s, _)| *s >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            explain("unknown field `max_step`, expected one of `model`, `max_steps`, `tools`"),
            "unknown key `max_step` (did you mean `max_steps`?)"
        );
        assert_eq!(
            explain("unknown field `zzz`, expected `a` or `b`"),
            "unknown key `zzz` (known: a, b)"
        );
        assert_eq!(
            explain("unknown variant `openia`, expected one of `openai`, `anthropic`"),
            "unknown value \"openia\" (did you mean \"openai\"?)"
        );
    }

    fn problems(text: &str) -> Vec<(String, String)> {
        match crate::config::Config::from_str(text, None, &|_| None) {
            Ok(_) => vec![],
            Err(e) => e.0.into_iter().map(|p| (p.key, p.message)).collect(),
        }
    }

    /// The two cases of issue 14: one bad key hid the rest of its section,
    /// and its consequence was reported instead of the real problem.
    #[test]
    fn one_bad_key_hides_nothing_and_causes_nothing() {
        let p = problems("[gateway]\nbind = \"0.0.0.0:18789\"\nmax_connections = \"many\"\n");
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["gateway.max_connections", "gateway.token"], "{p:?}");
        assert!(p[0].1.contains("expected a whole number"), "{p:?}");

        let p = problems(
            "[providers.fake]\nkind = \"openai\"\n[agents.defaults]\nmodel = \"nosuch/m\"\nmax_step = 3\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].0, "agents.defaults.max_step");
        assert_eq!(p[0].1, "unknown key `max_step` (did you mean `max_steps`?)");
        assert!(
            p[1].1.contains("\"nosuch\", which is not configured"),
            "{p:?}"
        );
    }

    #[test]
    fn a_broken_part_is_not_reported_again_as_missing() {
        // the provider has a bad kind: no "not configured" for the model ref
        let p = problems("[providers.x]\nkind = \"openia\"\n[agents.defaults]\nmodel = \"x/m\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "providers.x.kind");
        assert!(p[0].1.contains("did you mean \"openai\""), "{p:?}");
        // an agent without an id: its binding is not "unknown agent"; the
        // next agent's problem keeps its own index
        let p = problems(
            "[[agents.list]]\nworkspace = \"/w\"\n[[agents.list]]\nid = \"b\"\nmax_stepz = 1\n\
             [[bindings]]\nagent = \"a\"\n",
        );
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["agents.list[0]", "agents.list[1].max_stepz"],
            "{p:?}"
        );
        assert!(p[0].1.contains("missing field `id`"), "{p:?}");
        // a misspelt section
        let p = problems("[gatway]\nbind = \"127.0.0.1:1\"\n");
        assert_eq!(p[0].1, "unknown section (did you mean [gateway]?)");
    }

    /// Review of the first version: a small problem in an agent hid a
    /// binding's unknown agent; an agent dropped for a missing id shifted
    /// the index of the next one's problems.
    #[test]
    fn suppression_is_narrow_and_indices_hold() {
        let p = problems(
            "[[agents.list]]\nid = \"a\"\nworkspace = \"rel\"\n[[bindings]]\nagent = \"typo\"\n",
        );
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["agents.list[0].workspace", "bindings[0].agent"],
            "{p:?}"
        );
        let p = problems(
            "[[agents.list]]\nworkspace = \"/w\"\n[[agents.list]]\nid = \"b\"\nworkspace = \"rel\"\n",
        );
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["agents.list[0]", "agents.list[1].workspace"],
            "{p:?}"
        );
    }

    #[test]
    fn indices_stay_the_users() {
        let removed = vec![(vec!["list".to_string()], 0)];
        assert_eq!(original_index(&["list".to_string()], 0, &removed), 1);
        let removed = vec![(vec!["list".to_string()], 0), (vec!["list".to_string()], 2)];
        assert_eq!(original_index(&["list".to_string()], 1, &removed), 3);
    }
}
