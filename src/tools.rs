//! Built-in tools: `read`, `write`, `edit`, `ls`, all confined to the agent's
//! workspace.
//!
//! Confinement: a tool path must be relative, must not contain `..`, and its
//! resolved location (symlinks followed, for the deepest existing ancestor)
//! must stay inside the canonical workspace root. Anything else is a
//! [`ToolError`] the model sees as the tool result; it never aborts the run.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};

use crate::provider::ToolSpec;

/// The file tools (policy group `group:fs`).
pub const FS_TOOLS: [&str; 4] = ["read", "write", "edit", "ls"];

/// Largest tool result handed back to the model.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Largest file `write`/`edit` will produce.
const MAX_FILE: usize = 4 << 20;

#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ToolError {
    #[error("path {0:?} is outside the workspace; use a relative path inside it")]
    Escape(String),
    #[error("invalid arguments: {0}")]
    BadArgs(String),
    #[error("{0}")]
    Io(String),
    #[error("unknown tool {0:?}")]
    Unknown(String),
    #[error("tool {0:?} is not allowed for this agent")]
    Denied(String),
}

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "read".into(),
            description: "Read a text file in the workspace. Optional 1-based line offset and line limit.".into(),
            parameters: json!({"type":"object","properties":{
                "path":{"type":"string"},"offset":{"type":"integer","minimum":1},"limit":{"type":"integer","minimum":1}},
                "required":["path"],"additionalProperties":false}),
        },
        ToolSpec {
            name: "write".into(),
            description: "Create or overwrite a text file in the workspace (parent folders are created).".into(),
            parameters: json!({"type":"object","properties":{
                "path":{"type":"string"},"content":{"type":"string"}},
                "required":["path","content"],"additionalProperties":false}),
        },
        ToolSpec {
            name: "edit".into(),
            description: "Replace one exact, unique occurrence of old_text with new_text in a workspace file.".into(),
            parameters: json!({"type":"object","properties":{
                "path":{"type":"string"},"old_text":{"type":"string"},"new_text":{"type":"string"}},
                "required":["path","old_text","new_text"],"additionalProperties":false}),
        },
        ToolSpec {
            name: "ls".into(),
            description: "List a folder in the workspace (default: the workspace root).".into(),
            parameters: json!({"type":"object","properties":{"path":{"type":"string"}},"additionalProperties":false}),
        },
    ]
}

/// Resolves `rel` inside `root`, refusing escapes. The target need not exist.
pub fn confine(root: &Path, rel: &str) -> Result<PathBuf, ToolError> {
    let p = Path::new(rel);
    if rel.is_empty() || rel.contains('\0') {
        return Err(ToolError::BadArgs("empty path".into()));
    }
    if p.is_absolute() {
        return Err(ToolError::Escape(rel.into()));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(ToolError::Escape(rel.into())),
        }
    }
    let root = root
        .canonicalize()
        .map_err(|e| ToolError::Io(format!("workspace: {e}")))?;
    let full = root.join(p);
    // Canonicalize the deepest existing ancestor: catches symlinks anywhere
    // on the way, including a final symlink pointing outside.
    let mut existing = full.as_path();
    let mut rest = Vec::new();
    loop {
        if std::fs::symlink_metadata(existing).is_ok() {
            break;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Err(ToolError::Escape(rel.into())),
        }
    }
    let real = existing
        .canonicalize()
        .map_err(|_| ToolError::Escape(rel.into()))?;
    if !real.starts_with(&root) {
        return Err(ToolError::Escape(rel.into()));
    }
    let mut out = real;
    for n in rest.into_iter().rev() {
        out.push(n);
    }
    Ok(out)
}

fn arg<'a>(a: &'a Value, k: &str) -> Result<&'a str, ToolError> {
    a[k].as_str()
        .ok_or_else(|| ToolError::BadArgs(format!("\"{k}\" (string) is required")))
}

fn io(e: std::io::Error, rel: &str) -> ToolError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ToolError::Io(format!("{rel}: no such file or folder")),
        _ => ToolError::Io(format!("{rel}: {e}")),
    }
}

/// Runs one tool (blocking file I/O). Returns the text result for the model.
pub fn execute(root: &Path, name: &str, args: &str) -> Result<String, ToolError> {
    let a: Value = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(args)
            .map_err(|e| ToolError::BadArgs(format!("arguments are not JSON: {e}")))?
    };
    if !a.is_object() {
        return Err(ToolError::BadArgs("arguments must be a JSON object".into()));
    }
    match name {
        "read" => {
            let rel = arg(&a, "path")?;
            let p = confine(root, rel)?;
            let f = std::fs::File::open(&p).map_err(|e| io(e, rel))?;
            let mut buf = Vec::new();
            f.take(MAX_FILE as u64)
                .read_to_end(&mut buf)
                .map_err(|e| io(e, rel))?;
            let text = String::from_utf8_lossy(&buf);
            let offset = a["offset"].as_u64().unwrap_or(1).max(1) as usize;
            let limit = a["limit"].as_u64().map(|l| l as usize);
            let mut out: String = text
                .lines()
                .skip(offset - 1)
                .take(limit.unwrap_or(usize::MAX))
                .collect::<Vec<_>>()
                .join("\n");
            truncate(&mut out);
            Ok(out)
        }
        "write" => {
            let rel = arg(&a, "path")?;
            let content = arg(&a, "content")?;
            if content.len() > MAX_FILE {
                return Err(ToolError::BadArgs("content is larger than 4 MiB".into()));
            }
            let p = confine(root, rel)?;
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(e, rel))?;
                // The folders we just made cannot be symlinks, but re-check.
                confine(root, rel)?;
            }
            atomic_write(&p, content.as_bytes()).map_err(|e| io(e, rel))?;
            Ok(format!("wrote {} bytes to {rel}", content.len()))
        }
        "edit" => {
            let rel = arg(&a, "path")?;
            let old = arg(&a, "old_text")?;
            let new = arg(&a, "new_text")?;
            if old.is_empty() {
                return Err(ToolError::BadArgs("old_text must not be empty".into()));
            }
            let p = confine(root, rel)?;
            let text = std::fs::read_to_string(&p).map_err(|e| io(e, rel))?;
            match text.matches(old).count() {
                0 => Err(ToolError::BadArgs(format!("old_text not found in {rel}"))),
                1 => {
                    let out = text.replacen(old, new, 1);
                    atomic_write(&p, out.as_bytes()).map_err(|e| io(e, rel))?;
                    Ok(format!("edited {rel}"))
                }
                n => Err(ToolError::BadArgs(format!(
                    "old_text occurs {n} times in {rel}; include more context to make it unique"
                ))),
            }
        }
        "ls" => {
            let rel = a["path"].as_str().unwrap_or(".");
            let p = confine(root, rel)?;
            let mut names = Vec::new();
            for e in std::fs::read_dir(&p).map_err(|e| io(e, rel))? {
                let e = e.map_err(|e| io(e, rel))?;
                let ft = e.file_type().map_err(|e| io(e, rel))?;
                let mut n = e.file_name().to_string_lossy().into_owned();
                if ft.is_dir() {
                    n.push('/');
                } else if ft.is_symlink() {
                    n.push('@');
                }
                names.push(n);
            }
            names.sort();
            let mut out = names.join("\n");
            truncate(&mut out);
            Ok(if out.is_empty() {
                "(empty)".into()
            } else {
                out
            })
        }
        other => Err(ToolError::Unknown(other.into())),
    }
}

fn atomic_write(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = p.with_extension(format!("hearth-tmp-{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, p)
}

/// Cuts a tool result to [`MAX_OUTPUT`] with a visible notice.
pub fn truncate(s: &mut String) {
    if s.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let total = s.len();
        s.truncate(cut);
        s.push_str(&format!(
            "\n[output truncated: {total} bytes, showing the first {cut}]"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_tools_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        execute(
            r,
            "write",
            r#"{"path":"notes/a.md","content":"one\ntwo\nthree"}"#,
        )
        .unwrap();
        assert_eq!(
            execute(r, "read", r#"{"path":"notes/a.md","offset":2,"limit":1}"#).unwrap(),
            "two"
        );
        execute(
            r,
            "edit",
            r#"{"path":"notes/a.md","old_text":"two","new_text":"2"}"#,
        )
        .unwrap();
        assert_eq!(
            execute(r, "read", r#"{"path":"notes/a.md"}"#).unwrap(),
            "one\n2\nthree"
        );
        assert_eq!(execute(r, "ls", "{}").unwrap(), "notes/");
        assert!(matches!(
            execute(r, "read", r#"{"path":"nope"}"#),
            Err(ToolError::Io(_))
        ));
        assert!(matches!(
            execute(r, "read", "[1]"),
            Err(ToolError::BadArgs(_))
        ));
    }

    #[test]
    fn escapes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        std::fs::write(d.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(d.path(), ws.join("out")).unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), ws.join("s")).unwrap();
        for bad in [
            "../secret",
            "/etc/passwd",
            "a/../../secret",
            "out/secret",
            "s",
            "out/new.txt",
        ] {
            let args = format!(r#"{{"path":"{bad}"}}"#);
            assert!(
                matches!(execute(&ws, "read", &args), Err(ToolError::Escape(_))),
                "{bad} not refused"
            );
        }
        let w = r#"{"path":"out/evil.txt","content":"x"}"#;
        assert!(matches!(
            execute(&ws, "write", w),
            Err(ToolError::Escape(_))
        ));
        assert!(!d.path().join("evil.txt").exists());
    }
}
