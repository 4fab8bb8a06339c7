//! Replies as Telegram wants them: Markdown from the model rendered as
//! Telegram HTML (`parse_mode = "HTML"`: only `&`, `<` and `>` need
//! escaping, so no character of the text can break the message), split
//! into parts that fit Telegram's 4,096-character limit on paragraph,
//! line, sentence or word boundaries.

/// Telegram's limit for one message.
pub const MAX_CHARS: usize = 4096;
/// Source characters per part: room for the markup the rendering adds.
const PART_CHARS: usize = 3500;

/// One part of a reply: the HTML to send, and the plain text to send
/// instead if Telegram rejects the markup.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub html: String,
    pub plain: String,
}

/// Splits `text` and renders every part.
pub fn parts(text: &str) -> Vec<Part> {
    let text = text.trim();
    let text = if text.is_empty() {
        "(empty reply)"
    } else {
        text
    };
    let mut out = Vec::new();
    for src in split(text, PART_CHARS) {
        push_rendered(&src, &mut out);
    }
    out
}

fn push_rendered(src: &str, out: &mut Vec<Part>) {
    let html = render(src);
    if utf16_len(&html) <= MAX_CHARS || src.chars().count() < 64 {
        out.push(Part {
            html,
            plain: src.chars().take(MAX_CHARS).collect(),
        });
        return;
    }
    // escaping made it too long (a text of `&`s): halve and try again
    for half in split(src, src.chars().count() / 2) {
        push_rendered(&half, out);
    }
}

/// Telegram counts a message's length in UTF-16 code units (an emoji is
/// two).
pub fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Splits at the best boundary before `max` characters; a code fence cut
/// by a split is closed in the part and opened again in the next.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.to_string();
    let mut reopen: Option<String> = None;
    while !rest.is_empty() {
        let mut cur = match reopen.take() {
            Some(fence) => format!("{fence}\n"),
            None => String::new(),
        };
        let room = max.saturating_sub(cur.chars().count() + 4).max(16);
        let (head, tail) = cut(&rest, room);
        cur.push_str(head.trim_end());
        let tail = tail.trim_start_matches([' ', '\n']).to_string();
        if let Some(fence) = open_fence(&cur) {
            if !tail.is_empty() {
                cur.push_str("\n```");
                reopen = Some(fence);
            }
        }
        if !cur.trim().is_empty() {
            out.push(cur);
        }
        rest = tail;
    }
    out
}

/// The fence line (e.g. "```rust") left open at the end of `s`, if any.
fn open_fence(s: &str) -> Option<String> {
    let mut open = None;
    for l in s.lines() {
        if let Some(f) = fence(l) {
            open = match open {
                None => Some(f),
                Some(_) => None,
            };
        }
    }
    open
}

/// A line that opens or closes a code block: "```" and at most a short
/// language word (e.g. "```rust"); the fence as it is reopened. A line
/// like "```ls -la```" is inline code, not a fence.
fn fence(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("```")?;
    (rest.len() <= 20
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_#.".contains(c)))
    .then(|| format!("```{rest}"))
}

/// `(head, tail)` with `head` at most `max` characters, cut at a paragraph,
/// else a line, else a sentence end, else a space.
fn cut(s: &str, max: usize) -> (&str, &str) {
    let Some((limit, _)) = s.char_indices().nth(max) else {
        return (s, "");
    };
    let window = &s[..limit];
    let floor = limit / 3;
    let at = [
        window.rfind("\n\n").map(|i| i + 2),
        window.rfind('\n').map(|i| i + 1),
        [". ", "! ", "? ", "。"]
            .iter()
            .filter_map(|p| window.rfind(p).map(|i| i + p.len()))
            .max(),
        window.rfind(' ').map(|i| i + 1),
    ]
    .into_iter()
    .flatten()
    .find(|&i| i > floor)
    .unwrap_or(limit);
    s.split_at(at)
}

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

/// Markdown (the common subset models write) to Telegram HTML. Anything
/// that is not well-formed Markdown stays as literal text.
pub fn render(md: &str) -> String {
    let mut out = String::new();
    let mut code: Option<String> = None;
    for line in md.split('\n') {
        let t = line.trim_start();
        if fence(line).is_some() {
            match code.take() {
                Some(body) => {
                    out.push_str(&format!(
                        "<pre>{}</pre>\n",
                        escape(body.trim_end_matches('\n'))
                    ));
                }
                None => code = Some(String::new()),
            }
            continue;
        }
        if let Some(body) = code.as_mut() {
            body.push_str(line);
            body.push('\n');
            continue;
        }
        if let Some(inner) = t
            .strip_prefix("```")
            .and_then(|r| r.trim_end().strip_suffix("```"))
        {
            // "```ls -la```" on one line: inline code
            out.push_str(&format!("<code>{}</code>\n", escape(inner)));
            continue;
        }
        let heading = t.trim_start_matches('#');
        if t.starts_with('#') && heading.starts_with(' ') && t.len() - heading.len() <= 6 {
            out.push_str(&format!("<b>{}</b>\n", inline(heading.trim())));
        } else if let Some(item) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
            out.push_str(&format!("• {}\n", inline(item)));
        } else {
            out.push_str(&inline(line));
            out.push('\n');
        }
    }
    if let Some(body) = code {
        // an unclosed fence: still code
        out.push_str(&format!(
            "<pre>{}</pre>\n",
            escape(body.trim_end_matches('\n'))
        ));
    }
    out.trim_end_matches('\n').to_string()
}

/// Inline spans of one line: `code`, **bold**, __bold__, *italic*,
/// _italic_, ~~strike~~, [text](http...).
fn inline(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] == '`' {
            if let Some(j) = find(&c, i + 1, "`") {
                if j > i + 1 {
                    let inner: String = c[i + 1..j].iter().collect();
                    out.push_str(&format!("<code>{}</code>", escape(&inner)));
                    i = j + 1;
                    continue;
                }
            }
        }
        if c[i] == '[' {
            if let Some((text, url, end)) = link(&c, i) {
                out.push_str(&format!(
                    "<a href=\"{}\">{}</a>",
                    escape(&url),
                    inline(&text)
                ));
                i = end;
                continue;
            }
        }
        let mut matched = false;
        for (delim, tag) in [
            ("**", "b"),
            ("__", "b"),
            ("~~", "s"),
            ("*", "i"),
            ("_", "i"),
        ] {
            if let Some((inner, end)) = span(&c, i, delim) {
                out.push_str(&format!("<{tag}>{}</{tag}>", inline(&inner)));
                i = end;
                matched = true;
                break;
            }
        }
        if !matched {
            out.push_str(&escape(&c[i].to_string()));
            i += 1;
        }
    }
    out
}

fn starts(c: &[char], i: usize, pat: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    c.len() >= i + p.len() && c[i..i + p.len()] == p[..]
}

fn find(c: &[char], from: usize, pat: &str) -> Option<usize> {
    (from..c.len()).find(|&j| starts(c, j, pat))
}

/// A `delim`-delimited span at `i`: not empty, no space just inside the
/// delimiters, `_` and a single `*` not inside a word (snake_case and
/// 2*3*4 stay as they are).
fn span(c: &[char], i: usize, delim: &str) -> Option<(String, usize)> {
    let n = delim.chars().count();
    if !starts(c, i, delim) {
        return None;
    }
    let word = |k: usize| c.get(k).is_some_and(|ch| ch.is_alphanumeric());
    let wordy = delim.starts_with('_') || n == 1;
    if wordy && i > 0 && word(i - 1) {
        return None;
    }
    let first = *c.get(i + n)?;
    if first.is_whitespace() || starts(c, i + n, &delim[..1]) {
        return None;
    }
    let mut j = i + n + 1;
    while j < c.len() {
        if starts(c, j, delim) && !c[j - 1].is_whitespace() {
            if wordy && word(j + n) {
                j += 1;
                continue;
            }
            if n == 1 && starts(c, j + 1, delim) {
                // `*a**`: not this span's end
                j += 2;
                continue;
            }
            return Some((c[i + n..j].iter().collect(), j + n));
        }
        j += 1;
    }
    None
}

/// `[text](http(s)://url)` at `i`.
fn link(c: &[char], i: usize) -> Option<(String, String, usize)> {
    let close = find(c, i + 1, "](")?;
    let end = find(c, close + 2, ")")?;
    let text: String = c[i + 1..close].iter().collect();
    let url: String = c[close + 2..end].iter().collect();
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && !url.contains(char::is_whitespace)
        && !text.is_empty()
        && !text.contains('[');
    ok.then_some((text, url, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_telegram_html() {
        assert_eq!(
            render("**bold** and *it* and `a<b`"),
            "<b>bold</b> and <i>it</i> and <code>a&lt;b</code>"
        );
        assert_eq!(
            render("# Title\n- one\n- two"),
            "<b>Title</b>\n• one\n• two"
        );
        assert_eq!(
            render("```\nfn x() -> u8 {}\n```"),
            "<pre>fn x() -&gt; u8 {}</pre>"
        );
        assert_eq!(
            render("[site](https://x.org/?a=1&b=2)"),
            "<a href=\"https://x.org/?a=1&amp;b=2\">site</a>"
        );
        assert_eq!(
            render("[bad](javascript:alert(1))"),
            "[bad](javascript:alert(1))"
        );
        assert_eq!(
            render("snake_case_name and 2*3*4"),
            "snake_case_name and 2*3*4"
        );
    }

    #[test]
    fn special_characters_survive() {
        let s = "_ * [ ] ( ) ~ ` > # + - = | { } . ! & < \" '";
        let h = render(s);
        assert!(!h.contains("<b>") && !h.contains("<i>"), "{h}");
        assert_eq!(
            h,
            "_ * [ ] ( ) ~ ` &gt; # + - = | { } . ! &amp; &lt; &quot; '"
        );
    }

    #[test]
    fn long_replies_split_on_boundaries_and_keep_code_fenced() {
        let para = "This is a sentence. ".repeat(40);
        let text = format!(
            "{para}\n\n{para}\n\n```\n{}\n```\n{para}",
            "let x = 1;\n".repeat(300)
        );
        let ps = parts(&text);
        assert!(ps.len() >= 3, "{}", ps.len());
        for p in &ps {
            assert!(p.html.chars().count() <= MAX_CHARS);
            assert_eq!(
                p.html.matches("<pre>").count(),
                p.html.matches("</pre>").count()
            );
        }
        let joined: String = ps
            .iter()
            .map(|p| p.plain.replace("```", ""))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(joined.matches("let x = 1;").count(), 300);
        assert_eq!(joined.matches("This is a sentence.").count(), 120);
        assert!(!ps[0].plain.ends_with("sen"), "cut inside a word");
    }

    #[test]
    fn odd_fences_and_wide_characters() {
        assert_eq!(render("```ls -la```"), "<code>ls -la</code>");
        let h = render("```ls -la``` lists files");
        assert!(h.contains("ls -la") && h.contains("lists files"), "{h}");
        let long_fence = format!("```{}\n{}", "x".repeat(300), "word ".repeat(2000));
        assert!(
            parts(&long_fence).len() < 5,
            "a long first line is not a fence reopened in every part"
        );
        let emoji = "😀".repeat(3000);
        assert!(parts(&emoji)
            .iter()
            .all(|p| utf16_len(&p.html) <= MAX_CHARS));
    }

    #[test]
    fn text_of_ampersands_still_fits() {
        let ps = parts(&"&".repeat(10_000));
        assert!(ps.iter().all(|p| p.html.chars().count() <= MAX_CHARS));
        assert_eq!(ps.iter().map(|p| p.plain.len()).sum::<usize>(), 10_000);
    }
}
