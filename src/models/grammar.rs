//! Constrained decoding for tool calls: a character-level automaton that
//! accepts exactly the JSON texts `{"name":"<tool>","arguments":<args>}`
//! where `<tool>` is one of the offered tools and `<args>` conforms to that
//! tool's JSON schema (the subset tools use: objects with properties and
//! `required`, strings with optional `enum`, integers, numbers, booleans,
//! arrays). The sampler asks [`Automaton::accepts`] for every candidate
//! token and only samples tokens it accepts, so even a 135M model cannot
//! produce a malformed call. No whitespace outside strings; strings have no
//! escapes and at most [`MAX_STR`] characters; arrays at most [`MAX_ITEMS`]
//! items, so every call ends within a bounded number of tokens.

use std::sync::Arc;

use serde_json::Value;

pub const MAX_STR: usize = 256;
pub const MAX_ITEMS: usize = 8;
const MAX_DIGITS: usize = 15;
const MAX_DEPTH: usize = 6;

/// The schema subset, compiled.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Str(Option<Arc<Vec<String>>>),
    /// `min_one`: `"minimum": 1` or more (no zero, no sign); `unsigned`:
    /// a minimum of 0 or more (no sign).
    Int {
        unsigned: bool,
        min_one: bool,
    },
    Num {
        unsigned: bool,
    },
    Bool,
    Obj {
        props: Vec<(String, Arc<Kind>)>,
        required: Vec<String>,
    },
    Arr(Arc<Kind>),
}

impl Kind {
    /// Compiles a JSON schema; anything outside the subset becomes a string.
    pub fn from_schema(v: &Value) -> Kind {
        Self::compile(v, 0)
    }

    fn compile(v: &Value, depth: usize) -> Kind {
        let strings = |e: &Value| -> Option<Arc<Vec<String>>> {
            let a = e.as_array()?;
            let s: Vec<String> = a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            (!s.is_empty()).then(|| Arc::new(s))
        };
        if let Some(choices) = v.get("enum").and_then(strings) {
            return Kind::Str(Some(choices));
        }
        let min = v.get("minimum").and_then(Value::as_f64);
        match v.get("type").and_then(Value::as_str) {
            Some("integer") => Kind::Int {
                unsigned: min.is_some_and(|m| m >= 0.0),
                min_one: min.is_some_and(|m| m >= 1.0),
            },
            Some("number") => Kind::Num {
                unsigned: min.is_some_and(|m| m >= 0.0),
            },
            Some("boolean") => Kind::Bool,
            Some("array") if depth < MAX_DEPTH => Kind::Arr(Arc::new(Self::compile(
                v.get("items").unwrap_or(&Value::Null),
                depth + 1,
            ))),
            Some("object") if depth < MAX_DEPTH => {
                let props = v
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, s)| (k.clone(), Arc::new(Self::compile(s, depth + 1))))
                            .collect()
                    })
                    .unwrap_or_default();
                let required = v
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                Kind::Obj { props, required }
            }
            _ => Kind::Str(None),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ObjSt {
    KeyOrEnd,
    Key,
    Colon,
    CommaOrEnd,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ArrSt {
    ItemOrEnd,
    Item,
    CommaOrEnd,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum EnvSt {
    Name,
    Args,
    Close,
    Done,
}

#[derive(Debug, Clone)]
enum Frame {
    /// Text that must follow exactly.
    Lit(&'static str, usize),
    /// A value of this kind starts with the next character.
    Value(Arc<Kind>),
    Str {
        choices: Option<Arc<Vec<String>>>,
        buf: String,
    },
    Num {
        int: bool,
        buf: String,
    },
    Obj {
        kind: Arc<Kind>,
        seen: Vec<String>,
        key: String,
        st: ObjSt,
    },
    Arr {
        item: Arc<Kind>,
        n: usize,
        st: ArrSt,
    },
    /// The call envelope, at the bottom of the stack.
    Env {
        st: EnvSt,
        name: String,
    },
}

/// Accepts one tool call, character by character.
#[derive(Debug, Clone)]
pub struct Automaton {
    tools: Arc<Vec<(String, Arc<Kind>)>>,
    stack: Vec<Frame>,
}

impl Automaton {
    /// For these tools: (name, parameters schema).
    pub fn new(tools: &[(String, Value)]) -> Automaton {
        let tools: Vec<(String, Arc<Kind>)> = tools
            .iter()
            .map(|(n, s)| (n.clone(), Arc::new(Kind::from_schema(s))))
            .collect();
        let names = Arc::new(tools.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
        Automaton {
            tools: Arc::new(tools),
            stack: vec![
                Frame::Env {
                    st: EnvSt::Name,
                    name: String::new(),
                },
                Frame::Value(Arc::new(Kind::Str(Some(names)))),
                Frame::Lit("{\"name\":", 0),
            ],
        }
    }

    /// The call is complete: nothing more may follow.
    pub fn is_complete(&self) -> bool {
        matches!(
            self.stack.as_slice(),
            [Frame::Env {
                st: EnvSt::Done,
                ..
            }]
        )
    }

    /// Text that must come next, whatever is sampled (to feed it directly).
    pub fn forced(&self) -> Option<&'static str> {
        match self.stack.last() {
            Some(Frame::Lit(t, i)) => Some(&t[*i..]),
            _ => None,
        }
    }

    /// Inside a free string (no enum): how many more characters fit. Any
    /// text without `"`, `\\` and control characters of at most that many
    /// characters is accepted there (a fast path for the sampler).
    pub fn free_string_room(&self) -> Option<usize> {
        match self.stack.last() {
            Some(Frame::Str { choices: None, buf }) => Some(MAX_STR - buf.chars().count()),
            _ => None,
        }
    }

    /// Whether `text` can follow, without changing the automaton.
    pub fn accepts(&self, text: &str) -> bool {
        if text.is_empty() {
            return false;
        }
        let mut a = self.clone();
        a.feed_str(text)
    }

    /// Feeds text; false (and a broken automaton) if any character is not
    /// allowed.
    pub fn feed_str(&mut self, text: &str) -> bool {
        text.chars().all(|c| self.feed(c))
    }

    fn feed(&mut self, c: char) -> bool {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return false;
            };
            match top {
                Frame::Lit(t, i) => {
                    if t[*i..].starts_with(c) {
                        *i += c.len_utf8();
                        if *i == t.len() {
                            self.pop(None);
                        }
                        return true;
                    }
                    return false;
                }
                Frame::Value(kind) => {
                    let kind = kind.clone();
                    let next = match (&*kind, c) {
                        (Kind::Str(choices), '"') => Frame::Str {
                            choices: choices.clone(),
                            buf: String::new(),
                        },
                        (Kind::Int { unsigned, min_one }, '-' | '0'..='9')
                            if !((c == '-' && *unsigned) || (c == '0' && *min_one)) =>
                        {
                            Frame::Num {
                                int: true,
                                buf: c.to_string(),
                            }
                        }
                        (Kind::Num { unsigned }, '-' | '0'..='9') if !(c == '-' && *unsigned) => {
                            Frame::Num {
                                int: false,
                                buf: c.to_string(),
                            }
                        }
                        (Kind::Bool, 't') => Frame::Lit("true", 1),
                        (Kind::Bool, 'f') => Frame::Lit("false", 1),
                        (Kind::Obj { .. }, '{') => Frame::Obj {
                            kind: kind.clone(),
                            seen: Vec::new(),
                            key: String::new(),
                            st: ObjSt::KeyOrEnd,
                        },
                        (Kind::Arr(item), '[') => Frame::Arr {
                            item: item.clone(),
                            n: 0,
                            st: ArrSt::ItemOrEnd,
                        },
                        _ => return false,
                    };
                    *self.stack.last_mut().expect("top") = next;
                    return true;
                }
                Frame::Str { choices, buf } => {
                    if c == '"' {
                        if choices
                            .as_ref()
                            .is_some_and(|ch| !ch.iter().any(|x| x == buf))
                        {
                            return false;
                        }
                        let v = std::mem::take(buf);
                        self.pop(Some(v));
                        return true;
                    }
                    if c == '\\' || c.is_control() || buf.chars().count() >= MAX_STR {
                        return false;
                    }
                    buf.push(c);
                    if choices
                        .as_ref()
                        .is_some_and(|ch| !ch.iter().any(|x| x.starts_with(buf.as_str())))
                    {
                        buf.pop();
                        return false;
                    }
                    return true;
                }
                Frame::Num { int, buf } => {
                    let digits = buf.chars().filter(char::is_ascii_digit).count();
                    if c.is_ascii_digit() {
                        // No leading zeros: "0" may only be followed by "." .
                        let lead_zero = buf.trim_start_matches('-') == "0";
                        if digits >= MAX_DIGITS || lead_zero {
                            return false;
                        }
                        buf.push(c);
                        return true;
                    }
                    if c == '.' && !*int && !buf.contains('.') && digits > 0 {
                        buf.push(c);
                        return true;
                    }
                    // The number ends here; the character belongs to the parent.
                    if digits == 0 || buf.ends_with('.') {
                        return false;
                    }
                    self.pop(None);
                    continue;
                }
                Frame::Obj {
                    kind,
                    seen,
                    key,
                    st,
                } => {
                    let kind = kind.clone();
                    let Kind::Obj { props, required } = &*kind else {
                        return false;
                    };
                    let remaining: Vec<String> = props
                        .iter()
                        .map(|(k, _)| k.clone())
                        .filter(|k| !seen.contains(k))
                        .collect();
                    let closable = required.iter().all(|r| seen.contains(r));
                    match (*st, c) {
                        (ObjSt::KeyOrEnd | ObjSt::Key, '"') if !remaining.is_empty() => {
                            *st = ObjSt::Colon;
                            key.clear();
                            self.stack.push(Frame::Str {
                                choices: Some(Arc::new(remaining)),
                                buf: String::new(),
                            });
                            return true;
                        }
                        (ObjSt::KeyOrEnd | ObjSt::CommaOrEnd, '}') if closable => {
                            self.pop(None);
                            return true;
                        }
                        (ObjSt::CommaOrEnd, ',') if !remaining.is_empty() => {
                            *st = ObjSt::Key;
                            return true;
                        }
                        (ObjSt::Colon, ':') if !key.is_empty() => {
                            let Some(value) =
                                props.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
                            else {
                                return false;
                            };
                            *st = ObjSt::CommaOrEnd;
                            self.stack.push(Frame::Value(value));
                            return true;
                        }
                        _ => return false,
                    }
                }
                Frame::Arr { item, n, st } => match (*st, c) {
                    (ArrSt::ItemOrEnd | ArrSt::CommaOrEnd, ']') => {
                        self.pop(None);
                        return true;
                    }
                    (ArrSt::CommaOrEnd, ',') if *n < MAX_ITEMS => {
                        *st = ArrSt::Item;
                        return true;
                    }
                    (ArrSt::ItemOrEnd | ArrSt::Item, _) if *n < MAX_ITEMS => {
                        let item = item.clone();
                        *n += 1;
                        *st = ArrSt::CommaOrEnd;
                        self.stack.push(Frame::Value(item));
                        continue;
                    }
                    _ => return false,
                },
                Frame::Env { .. } => return false,
            }
        }
    }

    /// The top frame is finished (with the string it read, for strings);
    /// tell its parent.
    fn pop(&mut self, value: Option<String>) {
        self.stack.pop();
        let tools = self.tools.clone();
        match self.stack.last_mut() {
            Some(Frame::Obj { seen, key, st, .. }) if *st == ObjSt::Colon => {
                if let Some(k) = value {
                    *key = k.clone();
                    seen.push(k);
                }
            }
            Some(Frame::Env { st, name }) => match st {
                EnvSt::Name => {
                    if let Some(n) = value {
                        *name = n;
                        *st = EnvSt::Args;
                        let args = tools
                            .iter()
                            .find(|(t, _)| t == name)
                            .map(|(_, k)| k.clone())
                            .expect("name is a tool");
                        self.stack.push(Frame::Value(args));
                        self.stack.push(Frame::Lit(",\"arguments\":", 0));
                    }
                }
                EnvSt::Args => {
                    *st = EnvSt::Close;
                    self.stack.push(Frame::Lit("}", 0));
                }
                EnvSt::Close => *st = EnvSt::Done,
                EnvSt::Done => {}
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<(String, Value)> {
        vec![
            (
                "read".into(),
                json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            ),
            (
                "lights".into(),
                json!({"type": "object", "properties": {
                    "room": {"type": "string", "enum": ["kitchen", "hall"]},
                    "on": {"type": "boolean"},
                    "level": {"type": "integer"},
                    "count": {"type": "integer", "minimum": 1},
                    "temp": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string"}}},
                    "required": ["room", "on"]}),
            ),
            ("ls".into(), json!({"type": "object", "properties": {}})),
        ]
    }

    fn run(text: &str) -> (bool, bool) {
        let mut a = Automaton::new(&tools());
        (a.feed_str(text), a.is_complete())
    }

    #[test]
    fn accepts_valid_calls() {
        for ok in [
            r#"{"name":"read","arguments":{"path":"notes/a.txt"}}"#,
            r#"{"name":"ls","arguments":{}}"#,
            r#"{"name":"lights","arguments":{"room":"hall","on":true}}"#,
            r#"{"name":"lights","arguments":{"on":false,"room":"kitchen","level":-12,"temp":20.5,"tags":["a","b"]}}"#,
            r#"{"name":"lights","arguments":{"room":"kitchen","tags":[],"on":true}}"#,
            r#"{"name":"lights","arguments":{"room":"kitchen","on":true,"count":10}}"#,
        ] {
            assert_eq!(run(ok), (true, true), "{ok}");
            let v: Value = serde_json::from_str(ok).unwrap();
            assert!(v["arguments"].is_object());
        }
    }

    #[test]
    fn rejects_invalid_calls() {
        for bad in [
            r#"{"name":"rm","arguments":{}}"#,
            r#"{"name":"read","arguments":{}}"#,
            r#"{"name":"read","arguments":{"path":"a","path":"b"}}"#,
            r#"{"name":"read","arguments":{"file":"a"}}"#,
            r#"{"name":"lights","arguments":{"room":"attic","on":true}}"#,
            r#"{"name":"lights","arguments":{"room":"hall","on":yes}}"#,
            r#"{"name":"lights","arguments":{"room":"hall","on":true,"level":1.5}}"#,
            r#"{"name":"lights","arguments":{"room":"hall","on":true,"level":01}}"#,
            r#"{"name":"read","arguments":{"path":"a\"b"}}"#,
            r#"{"name":"lights","arguments":{"room":"hall","on":true,"count":0}}"#,
            r#"{"name":"lights","arguments":{"room":"hall","on":true,"count":-3}}"#,
            r#"{"name": "read","arguments":{"path":"a"}}"#,
            r#"{"name":"read","arguments":{"path":"a"}}}"#,
        ] {
            let (fed, complete) = run(bad);
            assert!(!(fed && complete), "accepted {bad}");
        }
    }

    #[test]
    fn prefixes_forced_text_and_token_checks() {
        let mut a = Automaton::new(&tools());
        assert_eq!(a.forced(), Some("{\"name\":"));
        assert!(a.accepts("{\"na"));
        assert!(!a.accepts(" {"));
        assert!(a.feed_str("{\"name\":\"li"));
        assert!(a.accepts("ghts\""));
        assert!(!a.accepts("ghtz"));
        assert!(a.feed_str("ghts\""));
        assert_eq!(a.forced(), Some(",\"arguments\":"));
        assert!(a.feed_str(",\"arguments\":{\"room\":\"hall\",\"on\":tr"));
        assert_eq!(a.forced(), Some("ue"));
        assert!(a.feed_str("ue"));
        assert!(!a.is_complete());
        assert!(a.accepts("}}"));
        assert!(a.feed_str("}}"));
        assert!(a.is_complete());
        assert!(!a.accepts("x"));
    }

    #[test]
    fn strings_are_bounded() {
        let mut a = Automaton::new(&tools());
        assert!(a.feed_str("{\"name\":\"read\",\"arguments\":{\"path\":\""));
        assert!(a.feed_str(&"x".repeat(MAX_STR)));
        assert!(!a.accepts("x"));
        assert!(a.accepts("\"}}"));
    }
}
