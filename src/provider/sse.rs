//! Server-sent events over a blocking reader, shared by the cloud providers.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ProviderError;

/// Longest SSE line we accept (a single delta is small; this bounds memory).
const MAX_LINE: usize = 1 << 20;
/// Longest event (all its data lines).
const MAX_EVENT: usize = 4 << 20;

#[derive(Debug, Default, PartialEq)]
pub struct Event {
    /// The `event:` field (empty when the server sends only data).
    pub event: String,
    /// The `data:` lines joined with newlines.
    pub data: String,
}

pub struct Reader<R> {
    r: R,
    line: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    pub fn new(r: R) -> Reader<R> {
        Reader {
            r,
            line: Vec::new(),
        }
    }

    /// The next event with data, `None` at the end of the stream. Comments,
    /// `id:` and `retry:` fields are skipped.
    pub fn next_event(&mut self, cancel: &AtomicBool) -> Result<Option<Event>, ProviderError> {
        let mut ev = Event::default();
        let mut has_data = false;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(ProviderError::Cancelled);
            }
            self.line.clear();
            let n = <&mut R as std::io::Read>::take(&mut self.r, MAX_LINE as u64)
                .read_until(b'\n', &mut self.line)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::TimedOut => ProviderError::Timeout,
                    _ => ProviderError::Network(e.to_string()),
                })?;
            if n == 0 {
                return Ok(has_data.then_some(ev));
            }
            if n >= MAX_LINE && !self.line.ends_with(b"\n") {
                return Err(ProviderError::MalformedResponse("SSE line too long".into()));
            }
            let l = String::from_utf8_lossy(&self.line);
            let l = l.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if has_data {
                    return Ok(Some(ev));
                }
                ev.event.clear();
                continue;
            }
            let (field, value) = match l.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (l, ""),
            };
            match field {
                "event" => ev.event = value.to_string(),
                "data" => {
                    if has_data {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                    has_data = true;
                    if ev.data.len() > MAX_EVENT {
                        return Err(ProviderError::MalformedResponse(
                            "SSE event too long".into(),
                        ));
                    }
                }
                _ => {} // comments (""), id, retry
            }
        }
    }
}

/// Test helper for the providers' stream parsers: runs `parse` over `s`
/// and checks that the streamed deltas add up to the returned text.
#[cfg(test)]
pub(crate) fn parse_checked(
    s: &str,
    parse: impl FnOnce(
        &[u8],
        &mut dyn FnMut(&str),
        &AtomicBool,
    ) -> Result<super::ChatResponse, ProviderError>,
) -> Result<super::ChatResponse, ProviderError> {
    let mut got = String::new();
    let r = parse(
        s.as_bytes(),
        &mut |d| got.push_str(d),
        &AtomicBool::new(false),
    );
    if let Ok(r) = &r {
        assert_eq!(got, r.text);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fields_and_end() {
        let s = ": ping\n\nevent: a\ndata: {\"x\":1}\n\ndata: one\ndata: two\n\nid: 7\ndata: last";
        let mut r = Reader::new(s.as_bytes());
        let c = AtomicBool::new(false);
        let e = r.next_event(&c).unwrap().unwrap();
        assert_eq!((e.event.as_str(), e.data.as_str()), ("a", "{\"x\":1}"));
        let e = r.next_event(&c).unwrap().unwrap();
        assert_eq!((e.event.as_str(), e.data.as_str()), ("", "one\ntwo"));
        assert_eq!(r.next_event(&c).unwrap().unwrap().data, "last");
        assert_eq!(r.next_event(&c).unwrap(), None);
    }
}
