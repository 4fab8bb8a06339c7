//! One language of the intent stage: its file (`lang/<code>.toml`)
//! parsed and its sentences compiled, and the matching of a message
//! against them. Pure: no registry, no I/O.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// Words a `{name}` takes at most; `{area}` at most 4.
const MAX_NAME_WORDS: usize = 8;
const MAX_AREA_WORDS: usize = 4;
/// Messages longer than this are not for the matcher (the model reads them).
pub const MAX_WORDS: usize = 24;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLang {
    language: String,
    skip: Vec<String>,
    all: Vec<String>,
    replace: BTreeMap<String, String>,
    numbers: BTreeMap<String, f64>,
    /// Joins units and tens in one word ("fünfundzwanzig").
    number_joiner: Option<String>,
    modes: BTreeMap<String, Vec<String>>,
    kinds: BTreeMap<String, Vec<String>>,
    states: BTreeMap<String, String>,
    responses: BTreeMap<String, String>,
    intents: Vec<RawIntent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntent {
    action: String,
    sentences: Vec<String>,
    value: Option<f64>,
    ask: Option<String>,
    measure: Option<String>,
}

/// The actions a sentence may name.
pub const ACTIONS: [&str; 22] = [
    "all_off",
    "all_on",
    "turn_on",
    "turn_off",
    "toggle",
    "set_brightness",
    "set_percentage",
    "set_position",
    "set_temperature",
    "set_mode",
    "set_value",
    "open",
    "close",
    "stop",
    "lock",
    "unlock",
    "activate",
    "press",
    "ask_state",
    "ask_measure",
    "arm",
    "disarm",
];

/// The responses a language file must have.
pub const RESPONSES: [&str; 26] = [
    "turn_on",
    "turn_off",
    "set_brightness",
    "set_percentage",
    "set_position",
    "set_temperature",
    "set_mode",
    "open",
    "close",
    "stop",
    "lock",
    "unlock",
    "activate",
    "press",
    "unconfirmed",
    "failed",
    "yes",
    "no",
    "state",
    "measure",
    "unknown_state",
    "which",
    "none_in_area",
    "joiner",
    "handled",
    "set_value",
];

/// The fewest words of its own a sentence matches with.
fn min_words(toks: &[Tok]) -> usize {
    toks.iter()
        .map(|t| match t {
            Tok::Word(_) => 1,
            Tok::Alt(alts) => alts.iter().map(|a| min_words(a)).min().unwrap_or(0),
            Tok::Slot(_) => 0,
        })
        .sum()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    /// One of these sequences (an empty one when optional).
    Alt(Vec<Vec<Tok>>),
    Slot(Slot),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Name,
    Area,
    Number,
    Mode,
}

#[derive(Debug, Clone)]
pub struct Intent {
    pub action: String,
    pub value: Option<f64>,
    pub ask: Option<String>,
    pub measure: Option<String>,
    sentences: Vec<Vec<Tok>>,
}

/// A language, ready to match.
#[derive(Debug)]
pub struct Lang {
    pub code: String,
    skip: Vec<String>,
    pub all: Vec<String>,
    replace: Vec<(String, String)>,
    numbers: HashMap<String, f64>,
    number_joiner: Option<String>,
    /// mode word → the mode's name.
    modes: HashMap<String, String>,
    /// plural word → component name.
    pub kinds: HashMap<String, String>,
    states: BTreeMap<String, String>,
    responses: BTreeMap<String, String>,
    pub intents: Vec<Intent>,
}

/// What a sentence captured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Captures {
    pub name: Option<String>,
    pub area: Option<String>,
    pub number: Option<f64>,
    pub mode: Option<String>,
}

impl Lang {
    /// Parses and checks a language file; every problem in one message.
    pub fn parse(text: &str) -> Result<Lang, String> {
        let raw: RawLang = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut probs = Vec::new();
        let code_ok = !raw.language.is_empty()
            && raw.language.len() <= 16
            && raw
                .language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !code_ok {
            probs.push("language must be a code like \"en\" or \"pt-BR\"".into());
        }
        for k in RESPONSES {
            if !raw.responses.contains_key(k) {
                probs.push(format!("responses.{k} is missing"));
            }
        }
        let mut lang = Lang {
            code: raw.language.clone(),
            skip: raw.skip.iter().map(|s| s.to_lowercase()).collect(),
            all: raw.all.iter().map(|s| s.to_lowercase()).collect(),
            replace: raw
                .replace
                .into_iter()
                .map(|(k, v)| (k.to_lowercase(), v.to_lowercase()))
                .collect(),
            numbers: raw
                .numbers
                .into_iter()
                .map(|(k, v)| (k.to_lowercase(), v))
                .collect(),
            number_joiner: raw.number_joiner,
            modes: raw
                .modes
                .into_iter()
                .flat_map(|(m, ws)| ws.into_iter().map(move |w| (w.to_lowercase(), m.clone())))
                .collect(),
            kinds: raw
                .kinds
                .into_iter()
                .flat_map(|(k, ws)| ws.into_iter().map(move |w| (w.to_lowercase(), k.clone())))
                .collect(),
            states: raw.states,
            responses: raw.responses,
            intents: Vec::new(),
        };
        // longest first, so "what's" goes before "'s"
        lang.replace
            .sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (i, it) in raw.intents.into_iter().enumerate() {
            if !ACTIONS.contains(&it.action.as_str()) {
                probs.push(format!(
                    "intents[{i}].action {:?} is not one of {}",
                    it.action,
                    ACTIONS.join(", ")
                ));
                continue;
            }
            let mut sentences = Vec::new();
            for s in &it.sentences {
                match lang.compile(s) {
                    // "{name} (an|ein)" with "ein" a skip word would take
                    // any text that names a device
                    Ok(t) if min_words(&t) == 0 => probs.push(format!(
                        "intents[{i}]: {s:?} can match without a word of its own (skip words do not count)"
                    )),
                    Ok(t) => sentences.push(t),
                    Err(e) => probs.push(format!("intents[{i}]: {s:?}: {e}")),
                }
            }
            lang.intents.push(Intent {
                action: it.action,
                value: it.value,
                ask: it.ask,
                measure: it.measure,
                sentences,
            });
        }
        if probs.is_empty() {
            Ok(lang)
        } else {
            Err(probs.join("; "))
        }
    }

    /// A response with `{key}`s filled in.
    /// One pass over the template, so a device name that contains
    /// `{error}` stays text.
    pub fn say(&self, key: &str, vars: &[(&str, &str)]) -> String {
        let t = self.responses.get(key).map(String::as_str).unwrap_or("");
        let mut out = String::with_capacity(t.len() + 32);
        let mut rest = t;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let var = tail.find('}').and_then(|j| {
                let k = &tail[1..j];
                vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (j, *v))
            });
            match var {
                Some((j, v)) => {
                    out.push_str(v);
                    rest = &tail[j + 1..];
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// A state word in this language ("on" → "an").
    pub fn state_word(&self, state: &str) -> String {
        self.states
            .get(state)
            .cloned()
            .unwrap_or_else(|| state.replace('_', " "))
    }

    /// The message as the sentences see it: lowercase words, `replace`
    /// applied, `skip` words dropped. `None` when too long.
    pub fn words(&self, text: &str) -> Option<Vec<String>> {
        let mut t = format!(" {} ", text.to_lowercase().replace(['’', '`'], "'"));
        for (k, v) in &self.replace {
            let word = k
                .chars()
                .all(|c| c.is_alphanumeric() || c == '\'' || c == ' ');
            if word {
                t = t.replace(&format!(" {k} "), &format!(" {v} "));
                // a word before punctuation ("outside?")
                for p in ['?', '!', '.', ','] {
                    t = t.replace(&format!(" {k}{p}"), &format!(" {v}{p}"));
                }
            } else {
                t = t.replace(k.as_str(), v);
            }
        }
        let out: Vec<String> = t
            .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == ','))
            .map(|w| w.trim_matches(|c| c == '.' || c == ','))
            .filter(|w| !w.is_empty())
            .filter(|w| !self.skip.iter().any(|s| s == w))
            .map(str::to_string)
            .collect();
        (out.len() <= MAX_WORDS).then_some(out)
    }

    fn compile(&self, s: &str) -> Result<Vec<Tok>, String> {
        let mut chars = s.chars().peekable();
        let toks = self.seq(&mut chars, None)?;
        if chars.next().is_some() {
            return Err("unbalanced ) or ]".into());
        }
        Ok(toks)
    }

    /// A sequence until `close` (or the end); `|` splits alternatives
    /// when inside brackets.
    fn seq(
        &self,
        it: &mut std::iter::Peekable<std::str::Chars<'_>>,
        close: Option<char>,
    ) -> Result<Vec<Tok>, String> {
        let mut out = Vec::new();
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut Vec<Tok>| {
            if !word.is_empty() {
                let w = std::mem::take(word).to_lowercase();
                if !self.skip.contains(&w) {
                    out.push(Tok::Word(w));
                }
            }
        };
        while let Some(&c) = it.peek() {
            match c {
                '(' | '[' => {
                    flush(&mut word, &mut out);
                    it.next();
                    let end = if c == '(' { ')' } else { ']' };
                    let mut alts = vec![self.seq(it, Some(end))?];
                    while it.peek() == Some(&'|') {
                        it.next();
                        alts.push(self.seq(it, Some(end))?);
                    }
                    if it.next() != Some(end) {
                        return Err(format!("missing {end}"));
                    }
                    if c == '[' {
                        alts.push(Vec::new());
                    }
                    out.push(Tok::Alt(alts));
                }
                '|' | ')' | ']' => {
                    if close.is_none() {
                        return Err(format!("{c} outside brackets"));
                    }
                    break;
                }
                '{' => {
                    flush(&mut word, &mut out);
                    it.next();
                    let name: String = it.by_ref().take_while(|c| *c != '}').collect();
                    out.push(Tok::Slot(match name.as_str() {
                        "name" => Slot::Name,
                        "area" => Slot::Area,
                        "number" => Slot::Number,
                        "mode" => Slot::Mode,
                        other => return Err(format!("unknown slot {{{other}}}")),
                    }));
                }
                c if c.is_whitespace() => {
                    flush(&mut word, &mut out);
                    it.next();
                }
                _ => {
                    word.push(c);
                    it.next();
                }
            }
        }
        flush(&mut word, &mut out);
        Ok(out)
    }

    /// Every way the intents' sentences match `words`, in file order;
    /// `area_ok` says whether some words name an area.
    pub fn matches(
        &self,
        words: &[String],
        area_ok: &dyn Fn(&str) -> bool,
    ) -> Vec<(&Intent, Captures)> {
        let mut out = Vec::new();
        for it in &self.intents {
            for s in &it.sentences {
                let mut found = Vec::new();
                self.walk(s, words, Captures::default(), area_ok, &mut found);
                for c in found {
                    if !out
                        .iter()
                        .any(|(i, x): &(&Intent, Captures)| std::ptr::eq(*i, it) && *x == c)
                    {
                        out.push((it, c));
                    }
                }
            }
        }
        out
    }

    /// Matches `toks` against all of `words`, collecting each capture set.
    fn walk(
        &self,
        toks: &[Tok],
        words: &[String],
        caps: Captures,
        area_ok: &dyn Fn(&str) -> bool,
        found: &mut Vec<Captures>,
    ) {
        if found.len() >= 8 {
            return;
        }
        let Some((first, rest)) = toks.split_first() else {
            if words.is_empty() {
                found.push(caps);
            }
            return;
        };
        match first {
            Tok::Word(w) => {
                if words.first() == Some(w) {
                    self.walk(rest, &words[1..], caps, area_ok, found);
                }
            }
            Tok::Alt(alts) => {
                for a in alts {
                    let mut seq = a.clone();
                    seq.extend_from_slice(rest);
                    self.walk(&seq, words, caps.clone(), area_ok, found);
                }
            }
            Tok::Slot(slot) => {
                let max = match slot {
                    Slot::Name => MAX_NAME_WORDS,
                    Slot::Area => MAX_AREA_WORDS,
                    Slot::Number => 2,
                    Slot::Mode => 1,
                };
                for n in 1..=max.min(words.len()) {
                    let phrase = words[..n].join(" ");
                    let mut c = caps.clone();
                    let ok = match slot {
                        Slot::Name => {
                            c.name = Some(phrase);
                            true
                        }
                        Slot::Area => {
                            let ok = area_ok(&phrase);
                            c.area = Some(phrase);
                            ok
                        }
                        Slot::Number => match self.number(&words[..n]) {
                            Some(v) => {
                                c.number = Some(v);
                                true
                            }
                            None => false,
                        },
                        Slot::Mode => match self.modes.get(&phrase) {
                            Some(m) => {
                                c.mode = Some(m.clone());
                                true
                            }
                            None => false,
                        },
                    };
                    if ok {
                        self.walk(rest, &words[n..], c, area_ok, found);
                    }
                }
            }
        }
    }

    /// Digits ("30", "21.5", "21,5") or number words ("twenty five",
    /// "fünfundzwanzig", "one hundred").
    pub fn number(&self, words: &[String]) -> Option<f64> {
        match words {
            [w] => {
                let digits = w.replace(',', ".");
                if let Ok(v) = digits.parse::<f64>() {
                    return v.is_finite().then_some(v);
                }
                if let Some(v) = self.numbers.get(w.as_str()) {
                    return Some(*v);
                }
                let j = self.number_joiner.as_deref()?;
                let (units, tens) = w.split_once(j)?;
                let (u, t) = (self.numbers.get(units)?, self.numbers.get(tens)?);
                (*u < 10.0 && *t >= 20.0 && *t < 100.0).then_some(u + t)
            }
            [a, b] => {
                let (x, y) = (
                    self.number(std::slice::from_ref(a))?,
                    self.numbers.get(b.as_str())?,
                );
                if *y == 100.0 && (1.0..10.0).contains(&x) {
                    Some(x * 100.0)
                } else if (20.0..100.0).contains(&x) && x % 10.0 == 0.0 && (1.0..10.0).contains(y) {
                    Some(x + y)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn en() -> Lang {
        Lang::parse(include_str!("lang/en.toml")).unwrap()
    }

    fn w(l: &Lang, s: &str) -> Vec<String> {
        l.words(s).unwrap()
    }

    #[test]
    fn shipped_languages_parse() {
        for (code, text) in super::super::LANGUAGES {
            let l = Lang::parse(text).unwrap_or_else(|e| panic!("{code}: {e}"));
            assert_eq!(l.code, *code);
            assert!(l.intents.len() > 10);
        }
    }

    #[test]
    fn words_are_normalized() {
        let l = en();
        assert_eq!(
            w(&l, "What's the temperature outside?"),
            ["what", "is", "temperature", "outdoor"]
        );
        assert_eq!(
            w(&l, "Dim the lamp to 30%, please!"),
            ["dim", "lamp", "to", "30", "percent"]
        );
        assert_eq!(
            w(&l, "Set it to 21.5°C"),
            ["set", "it", "to", "21.5", "degrees"]
        );
        assert!(l.words(&"word ".repeat(40)).is_none());
    }

    #[test]
    fn numbers_in_words_and_digits() {
        let l = en();
        let n = |s: &str| l.number(&w(&l, s));
        assert_eq!(n("30"), Some(30.0));
        assert_eq!(n("twenty five"), Some(25.0));
        assert_eq!(n("one hundred"), Some(100.0));
        assert_eq!(n("seventeen"), Some(17.0));
        assert_eq!(n("twenty twenty"), None);
        assert_eq!(n("inf"), None);
        let de = Lang::parse(include_str!("lang/de.toml")).unwrap();
        assert_eq!(de.number(&["fünfundzwanzig".to_string()]), Some(25.0));
        assert_eq!(de.number(&["21,5".to_string()]), Some(21.5));
    }

    #[test]
    fn sentences_capture_slots() {
        let l = en();
        let areas = |a: &str| a == "kitchen" || a == "living room";
        let m = |s: &str| -> Vec<(String, Captures)> {
            l.matches(&w(&l, s), &areas)
                .into_iter()
                .map(|(i, c)| (i.action.clone(), c))
                .collect()
        };
        let first = |s: &str| {
            m(s).into_iter()
                .next()
                .unwrap_or_else(|| panic!("no match for {s:?}"))
        };
        let (a, c) = first("turn off the kitchen light");
        assert_eq!(
            (a.as_str(), c.name.as_deref()),
            ("turn_off", Some("kitchen light"))
        );
        let (a, c) = first("switch the fan on");
        assert_eq!((a.as_str(), c.name.as_deref()), ("turn_on", Some("fan")));
        let (a, c) = first("dim the bedroom lamp to thirty percent");
        assert_eq!(
            (a.as_str(), c.name.as_deref(), c.number),
            ("set_brightness", Some("bedroom lamp"), Some(30.0))
        );
        let (a, c) = first("turn everything off in the living room");
        assert_eq!(
            (a.as_str(), c.area.as_deref()),
            ("all_off", Some("living room"))
        );
        let (a, c) = first("what's the temperature in the kitchen?");
        assert_eq!(
            (a.as_str(), c.area.as_deref()),
            ("ask_measure", Some("kitchen"))
        );
        let (a, c) = first("set the thermostat to heat");
        assert_eq!((a.as_str(), c.mode.as_deref()), ("set_mode", Some("heat")));
        // an area that does not exist is not an area
        assert!(m("turn everything off in the garage").is_empty());
        // "I'm cold" is for the model
        assert!(m("I'm cold").is_empty());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e =
            Lang::parse("language = \"xx\"\n[[intents]]\naction = \"fly\"\nsentences = [\"(a\"]\n")
                .unwrap_err();
        assert!(e.contains("responses.turn_on is missing"), "{e}");
        assert!(e.contains("\"fly\" is not one of"), "{e}");
        let e = Lang::parse(&include_str!("lang/en.toml").replace("{name} off\"", "{nam} off\""))
            .unwrap_err();
        assert!(e.contains("unknown slot {nam}"), "{e}");
        // a sentence that is only a name (a skip word does not count)
        let e = Lang::parse(
            &include_str!("lang/en.toml").replace("\"{name} off\"", "\"{name} [the]\""),
        )
        .unwrap_err();
        assert!(e.contains("can match without a word of its own"), "{e}");
    }
}
