//! The file tools: `read`, `write`, `edit`, `ls` (group `fs`), all
//! confined to the agent's workspace.
//!
//! Confinement ([`dir`]): a tool path must be relative without `..`, and it
//! is opened one component at a time from the workspace's directory handle
//! without following symbolic links, so nothing outside the workspace can
//! be read or written, whatever the workspace holds or a concurrent rename
//! does. Anything else is a [`ToolError`] the model sees as the tool
//! result; it never aborts the run.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

pub use super::dir::{PathError, Root};
use super::{truncate, Tool, ToolCx, ToolFuture, ToolSpec};

/// The file tools (policy group `group:fs`).
pub const FS_TOOLS: [&str; 4] = ["read", "write", "edit", "ls"];

impl From<PathError> for ToolError {
    fn from(e: PathError) -> ToolError {
        match e {
            PathError::Escape(p) => ToolError::Escape(p),
            PathError::Link(p) => ToolError::Link(p),
            PathError::Bad(m) => ToolError::BadArgs(m),
            PathError::Io(m) => ToolError::Io(m),
        }
    }
}

/// Reads a workspace file the way the tools do (no links followed).
pub fn read_file(workspace: &Path, rel: &str) -> Result<Vec<u8>, PathError> {
    Root::open(workspace)?.read(rel)
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ToolError {
    #[error("path {0:?} is outside the workspace; use a relative path inside it")]
    Escape(String),
    #[error("{0}: is a symbolic link; the file tools do not follow links")]
    Link(String),
    #[error("invalid arguments: {0}")]
    BadArgs(String),
    #[error("{0}")]
    Io(String),
    #[error("unknown tool {0:?}")]
    Unknown(String),
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

fn arg<'a>(a: &'a Value, k: &str) -> Result<&'a str, ToolError> {
    a[k].as_str()
        .ok_or_else(|| ToolError::BadArgs(format!("\"{k}\" (string) is required")))
}

/// One file tool for the registry.
pub struct FileTool(ToolSpec);

/// The four file tools.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    specs()
        .into_iter()
        .map(|s| Arc::new(FileTool(s)) as Arc<dyn Tool>)
        .collect()
}

impl Tool for FileTool {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn group(&self) -> &'static str {
        "fs"
    }
    fn call<'a>(&'a self, cx: &'a ToolCx, args: Value) -> ToolFuture<'a> {
        let (ws, name) = (cx.workspace.clone(), self.0.name.clone());
        Box::pin(super::blocking(move || {
            execute_value(&ws, &name, &args).map_err(|e| e.to_string())
        }))
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
    execute_value(root, name, &a)
}

fn execute_value(root: &Path, name: &str, a: &Value) -> Result<String, ToolError> {
    if !a.is_object() {
        return Err(ToolError::BadArgs("arguments must be a JSON object".into()));
    }
    if !FS_TOOLS.contains(&name) {
        return Err(ToolError::Unknown(name.into()));
    }
    let ws = Root::open(root)?;
    match name {
        "read" => {
            let rel = arg(a, "path")?;
            let buf = ws.read(rel)?;
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
            let rel = arg(a, "path")?;
            let content = arg(a, "content")?;
            ws.write(rel, content.as_bytes())?;
            Ok(format!("wrote {} bytes to {rel}", content.len()))
        }
        "edit" => {
            let rel = arg(a, "path")?;
            let old = arg(a, "old_text")?;
            let new = arg(a, "new_text")?;
            if old.is_empty() {
                return Err(ToolError::BadArgs("old_text must not be empty".into()));
            }
            let bytes = ws.read(rel)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| ToolError::Io(format!("{rel}: is not UTF-8 text")))?;
            match text.matches(old).count() {
                0 => Err(ToolError::BadArgs(format!("old_text not found in {rel}"))),
                1 => {
                    ws.write(rel, text.replacen(old, new, 1).as_bytes())?;
                    Ok(format!("edited {rel}"))
                }
                n => Err(ToolError::BadArgs(format!(
                    "old_text occurs {n} times in {rel}; include more context to make it unique"
                ))),
            }
        }
        _ => {
            let rel = a["path"].as_str().unwrap_or(".");
            let names = ws.list(rel)?;
            let mut out = names.join("\n");
            truncate(&mut out);
            Ok(if out.is_empty() {
                "(empty)".into()
            } else {
                out
            })
        }
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
                matches!(
                    execute(&ws, "read", &args),
                    Err(ToolError::Escape(_) | ToolError::Link(_))
                ),
                "{bad} not refused"
            );
        }
        let w = r#"{"path":"out/evil.txt","content":"x"}"#;
        assert!(matches!(execute(&ws, "write", w), Err(ToolError::Link(_))));
        assert!(!d.path().join("evil.txt").exists());
        // the workspace root itself (5b0ef1f wrote `<ws>.hearth-tmp-<pid>`)
        let w = r#"{"path":".","content":"x"}"#;
        assert!(matches!(
            execute(&ws, "write", w),
            Err(ToolError::BadArgs(_))
        ));
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// A folder swapped for a link while writes go on: 5b0ef1f's
    /// check-then-open let one write in 2,000 through.
    #[test]
    fn a_concurrent_swap_cannot_redirect_a_write() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (ws, outside, stop) = (ws.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || {
                let (sub, real, link) = (ws.join("sub"), ws.join("sub.real"), ws.join("sub.link"));
                let _ = std::os::unix::fs::symlink(&outside, &link);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::rename(&sub, &real);
                    let _ = std::fs::rename(&link, &sub);
                    std::thread::yield_now();
                    let _ = std::fs::rename(&sub, &link);
                    let _ = std::fs::rename(&real, &sub);
                }
            })
        };
        for i in 0..2000 {
            let _ = execute(
                &ws,
                "write",
                &format!(r#"{{"path":"sub/f{i}.txt","content":"x"}}"#),
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        let leaked: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(leaked.is_empty(), "writes escaped: {leaked:?}");
    }
}
