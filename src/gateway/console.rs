//! The web console's files, embedded in the binary and served on the
//! gateway's own port: `GET /` (a plain GET; the WebSocket upgrade on `/`
//! is the gateway), `/console/app.js`, `/console/app.css`. Plain HTML, CSS
//! and JavaScript from `src/gateway/console/`, no build step and nothing
//! fetched from elsewhere at run time; the page talks to the gateway over
//! the WebSocket like every client (docs/console.md).
//!
//! Every answer carries a Content-Security-Policy that allows only this
//! origin (scripts, styles, the WebSocket), no framing, no inline script.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub const INDEX: &str = include_str!("console/index.html");
pub const APP_JS: &str = include_str!("console/app.js");
pub const APP_CSS: &str = include_str!("console/app.css");

/// Bytes of the console as embedded.
pub fn size() -> usize {
    INDEX.len() + APP_JS.len() + APP_CSS.len()
}

/// The page's policy. `connect-src` names the page's own host with ws:
/// and wss: besides 'self' (older Safari does not count a WebSocket to
/// the same host as 'self'); `host` passed the gateway's Host check and is
/// kept to host-name characters.
fn csp(host: &str) -> String {
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(*c))
        .take(255)
        .collect();
    let ws = if host.is_empty() {
        String::new()
    } else {
        format!(" ws://{host} wss://{host}")
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{ws}; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    )
}

fn asset(body: &'static str, kind: &'static str, host: &str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&csp(host)) {
        h.insert("content-security-policy", v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// The page, for a request whose `Host` was `host`.
pub fn index(host: &str) -> Response {
    asset(INDEX, "text/html; charset=utf-8", host)
}

pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8", "")
}

pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8", "")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_names_only_the_pages_host() {
        let p = super::csp("hearth.local:18789");
        assert!(
            p.contains("connect-src 'self' ws://hearth.local:18789 wss://hearth.local:18789;"),
            "{p}"
        );
        // a Host cannot add a directive or a source
        let p = super::csp("evil\r\nx: y; script-src *");
        let connect = p.split(';').find(|d| d.contains("connect-src")).unwrap();
        assert_eq!(connect.split_whitespace().count(), 4, "{p}");
        assert!(!p.contains('*') && p.matches(';').count() == 7, "{p}");
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        for (name, text) in [("index.html", super::INDEX), ("app.js", super::APP_JS)] {
            assert!(!text.contains("http://") || name == "app.js", "{name}");
            assert!(!text.contains("https://cdn"), "{name}");
        }
        assert!(super::INDEX.contains("/console/app.js"));
        assert!(!super::INDEX.contains("<script>"), "no inline script (CSP)");
    }
}
