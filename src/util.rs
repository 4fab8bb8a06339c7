//! Small helpers shared by several modules.

/// Characters per estimated token (the usual figure for English with BPE
/// tokenizers); context sizes and memory chunks are counted with it.
pub const CHARS_PER_TOKEN: usize = 4;

/// Estimated tokens of `chars` characters.
pub fn estimate_tokens(chars: usize) -> usize {
    chars.div_ceil(CHARS_PER_TOKEN)
}

/// Formats milliseconds since the epoch as RFC 3339 UTC (no leap seconds).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01, the inverse of
/// [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Today as days since 1970-01-01 (UTC).
pub fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i64
}

/// The host part of a Host header: lowercase, without port, brackets or a
/// trailing dot. `None` for something that is not a host.
pub fn host_name(h: &str) -> Option<String> {
    let h = h.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) if is_port(p) && !n.contains(':') => n,
            Some(_) if h.matches(':').count() > 1 => h, // a bare IPv6 address
            Some(_) => return None,
            None => h,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    ok.then_some(name)
}

pub fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Test builds only: aborts the process at `point` when `HEARTH_TEST_CRASH`
/// names it (a kill -9 at an exact step of a delivery protocol).
pub fn crash_hook(point: &str) {
    if cfg!(debug_assertions) && std::env::var("HEARTH_TEST_CRASH").is_ok_and(|v| v == point) {
        eprintln!("HEARTH_TEST_CRASH: aborting at {point}");
        std::process::abort();
    }
}

/// A random number from the OS (backoff jitter).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("OS random source");
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_round_trip() {
        for z in [-800_000i64, -1, 0, 59, 60, 11_016, 20_779, 2_932_896] {
            let (y, m, d) = super::civil_from_days(z);
            assert_eq!(super::days_from_civil(y, m, d), z, "{z}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000_000), "2026-11-18T11:06:40Z");
    }
}
