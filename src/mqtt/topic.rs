//! MQTT topic names and filters: what Hearth accepts before it subscribes
//! or publishes. A topic taken from a discovery payload is hostile input:
//! one with a NUL, a wildcard or 64 KiB of text makes a SUBSCRIBE or
//! PUBLISH malformed, and the broker drops the whole connection for it.

/// Longest topic Hearth takes (MQTT allows 65,535 bytes; Home Assistant
/// and Zigbee2MQTT topics are a few dozen).
pub const MAX_TOPIC: usize = 1024;

fn check_chars(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("the topic is empty".into());
    }
    if t.len() > MAX_TOPIC {
        return Err(format!("the topic is longer than {MAX_TOPIC} bytes"));
    }
    // U+0000 is forbidden (MQTT 3.1.1 §1.5.3); the other controls and the
    // non-characters too: mosquitto drops a connection for those
    if t.chars().any(|c| c.is_control() || noncharacter(c)) {
        return Err("the topic contains a control character or a non-character".into());
    }
    Ok(())
}

/// U+FDD0..U+FDEF and U+xFFFE / U+xFFFF of every plane.
fn noncharacter(c: char) -> bool {
    let u = c as u32;
    (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE
}

/// A topic name to publish to or to read one device's state from: no
/// wildcards, no `$` topics (the broker's own).
pub fn check_name(t: &str) -> Result<(), String> {
    check_chars(t)?;
    if t.contains(['+', '#']) {
        return Err(format!("{t:?} contains a wildcard"));
    }
    if t.starts_with('$') {
        return Err(format!("{t:?} is a broker topic ($...)"));
    }
    Ok(())
}

/// A subscription filter: `+` and `#` only as whole levels, `#` last.
pub fn check_filter(f: &str) -> Result<(), String> {
    check_chars(f)?;
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        let bad = match *l {
            "#" => i + 1 != levels.len(),
            "+" => false,
            l => l.contains(['+', '#']),
        };
        if bad {
            return Err(format!(
                "{f:?}: wildcards must be whole levels, and # the last"
            ));
        }
    }
    Ok(())
}

/// Whether `topic` is `prefix` or below it.
pub fn under(topic: &str, prefix: &str) -> bool {
    topic == prefix
        || topic
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        assert!(check_name("zigbee2mqtt/kitchen/set").is_ok());
        for bad in [
            "",
            "a/+/b",
            "a/#",
            "$SYS/x",
            "a\0b",
            "a\nb",
            "a\u{FFFF}",
            "a\u{FDD0}",
            "a\u{1FFFE}",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_TOPIC + 1)).is_err());
        assert!(check_filter("a/+/c").is_ok());
        assert!(check_filter("a/#").is_ok());
        assert!(check_filter("#").is_ok());
        for bad in ["a/#/c", "a+/b", "a/b#", "", "a\0"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
        assert!(under("hearth/in/x", "hearth"));
        assert!(under("hearth", "hearth"));
        assert!(!under("hearthx/in", "hearth"));
    }

    #[test]
    fn filters_match_like_a_broker() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }
}
