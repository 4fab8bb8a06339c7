//! Workspace file access that cannot leave the workspace.
//!
//! Every path is walked one component at a time from the workspace's
//! directory handle (`openat` with `O_NOFOLLOW`), so a symbolic link is
//! never followed, anywhere on the path, and there is no window between a
//! check and an open for a rename to exploit. Writes go to a temporary
//! file created in the target's own directory with `O_EXCL|O_NOFOLLOW`
//! (a planted name cannot redirect it), then `renameat` over the target.
//! The workspace root itself is never written.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a workspace path could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum PathError {
    #[error("path {0:?} is outside the workspace; use a relative path inside it")]
    Escape(String),
    #[error("{0}: is a symbolic link; the file tools do not follow links")]
    Link(String),
    #[error("invalid path: {0}")]
    Bad(String),
    #[error("{0}")]
    Io(String),
}

/// An open workspace directory.
pub struct Root {
    fd: OwnedFd,
}

/// A path split into its directory components and its last name.
struct Split<'a> {
    dirs: Vec<&'a OsStr>,
    name: Option<&'a OsStr>,
}

fn split(rel: &str) -> Result<Split<'_>, PathError> {
    if rel.contains('\0') {
        return Err(PathError::Bad("the path contains a NUL byte".into()));
    }
    if rel.len() > 4096 {
        return Err(PathError::Bad("the path is longer than 4096 bytes".into()));
    }
    let p = Path::new(rel);
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) if n.len() <= 255 => parts.push(n),
            Component::Normal(_) => {
                return Err(PathError::Bad("a name is longer than 255 bytes".into()))
            }
            Component::CurDir => {}
            _ => return Err(PathError::Escape(rel.into())),
        }
    }
    let name = parts.pop();
    Ok(Split { dirs: parts, name })
}

fn io_err(rel: &str, e: Errno) -> PathError {
    match e {
        Errno::LOOP => PathError::Link(rel.into()),
        Errno::NOENT => PathError::Io(format!("{rel}: no such file or folder")),
        Errno::NOTDIR => PathError::Io(format!("{rel}: a part of the path is not a folder")),
        Errno::ISDIR => PathError::Io(format!("{rel}: is a folder")),
        e => PathError::Io(format!("{rel}: {}", std::io::Error::from(e))),
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Largest file read or written through [`Root`].
pub const MAX_FILE: u64 = 4 << 20;

impl Root {
    /// Opens the workspace directory (the configured path itself may be a
    /// link; nothing below it is followed).
    pub fn open(path: &Path) -> Result<Root, PathError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            PathError::Io(format!(
                "workspace {}: {}",
                path.display(),
                std::io::Error::from(e)
            ))
        })?;
        Ok(Root { fd })
    }

    /// The directory of `dirs`, walking (and with `create`, making) one
    /// component at a time without following links.
    fn walk(&self, rel: &str, dirs: &[&OsStr], create: bool) -> Result<OwnedFd, PathError> {
        let mut cur = rustix::io::dup(&self.fd).map_err(|e| io_err(rel, e))?;
        for d in dirs {
            let next = match rustix::fs::openat(&cur, *d, DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, *d, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_err(rel, e)),
                    }
                    rustix::fs::openat(&cur, *d, DIR_FLAGS, Mode::empty())
                }
                r => r,
            };
            cur = next.map_err(|e| match e {
                // O_DIRECTORY|O_NOFOLLOW on a link: ELOOP or ENOTDIR
                Errno::NOTDIR if is_link(&cur, d) => PathError::Link(rel.into()),
                e => io_err(rel, e),
            })?;
        }
        Ok(cur)
    }

    /// Reads a regular file (at most [`MAX_FILE`] bytes).
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, PathError> {
        let s = split(rel)?;
        let Some(name) = s.name else {
            return Err(PathError::Io(format!("{rel}: is the workspace folder")));
        };
        let dir = self.walk(rel, &s.dirs, false)?;
        // NONBLOCK: a planted FIFO must not hang the tool; it is refused below.
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(rel, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err(rel, e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(PathError::Io(format!("{rel}: is a folder"))),
            _ => return Err(PathError::Io(format!("{rel}: is not a regular file"))),
        }
        let mut buf = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_FILE)
            .read_to_end(&mut buf)
            .map_err(|e| PathError::Io(format!("{rel}: {e}")))?;
        Ok(buf)
    }

    /// Replaces (or creates) `rel` with `data`, making parent folders.
    pub fn write(&self, rel: &str, data: &[u8]) -> Result<(), PathError> {
        let s = split(rel)?;
        let Some(name) = s.name else {
            return Err(PathError::Bad(format!(
                "{rel:?} names the workspace folder itself; give a file name"
            )));
        };
        if data.len() as u64 > MAX_FILE {
            return Err(PathError::Bad("content is larger than 4 MiB".into()));
        }
        let dir = self.walk(rel, &s.dirs, true)?;
        let (tmp, fd) = create_temp(&dir, name).map_err(|e| io_err(rel, e))?;
        let mut f = std::fs::File::from(fd);
        let written = f.write_all(data).and_then(|_| f.sync_all());
        drop(f);
        let done = written
            .map_err(|e| PathError::Io(format!("{rel}: {e}")))
            .and_then(|_| rustix::fs::renameat(&dir, &tmp, &dir, name).map_err(|e| io_err(rel, e)));
        if done.is_err() {
            let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
        }
        done
    }

    /// The entries of folder `rel` ("" or "." for the workspace), sorted,
    /// with `/` after folders and `@` after links.
    pub fn list(&self, rel: &str) -> Result<Vec<String>, PathError> {
        let s = split(rel)?;
        let mut dirs = s.dirs.clone();
        dirs.extend(s.name);
        let dir = self.walk(rel, &dirs, false)?;
        let mut names = Vec::new();
        let it = rustix::fs::Dir::read_from(&dir).map_err(|e| io_err(rel, e))?;
        for e in it {
            let e = e.map_err(|e| io_err(rel, e))?;
            let n = e.file_name().to_bytes();
            // a temporary file a crash left behind is not the agent's
            if n == b"." || n == b".." || n.windows(12).any(|w| w == b".hearth-tmp-") {
                continue;
            }
            let ft = match e.file_type() {
                FileType::Unknown => {
                    rustix::fs::statat(&dir, e.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                        .map(|st| FileType::from_raw_mode(st.st_mode))
                        .unwrap_or(FileType::Unknown)
                }
                t => t,
            };
            let mut n = String::from_utf8_lossy(n).into_owned();
            match ft {
                FileType::Directory => n.push('/'),
                FileType::Symlink => n.push('@'),
                _ => {}
            }
            names.push(n);
        }
        names.sort();
        Ok(names)
    }
}

fn is_link(dir: &OwnedFd, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// A new file next to `name` in `dir`, created exclusively (never through
/// a link someone planted under the temporary name).
fn create_temp(dir: &OwnedFd, name: &OsStr) -> Result<(OsString, OwnedFd), Errno> {
    let mut last = Errno::EXIST;
    for _ in 0..8 {
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).expect("OS random source");
        let mut tmp = OsString::from(".");
        tmp.push(OsStr::from_bytes(&name.as_bytes()[..name.len().min(200)]));
        tmp.push(format!(
            ".hearth-tmp-{}",
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        match rustix::fs::openat(
            dir,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => return Ok((tmp, fd)),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, std::path::PathBuf, Root) {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let r = Root::open(&ws).unwrap();
        (d, ws, r)
    }

    #[test]
    fn round_trip_and_listing() {
        let (_d, ws, r) = ws();
        r.write("notes/a.md", b"one").unwrap();
        r.write("./notes/a.md", b"two").unwrap();
        assert_eq!(r.read("notes/a.md").unwrap(), b"two");
        assert_eq!(r.list("").unwrap(), vec!["notes/"]);
        assert_eq!(r.list("notes").unwrap(), vec!["a.md"]);
        // no temporary file left behind
        assert_eq!(std::fs::read_dir(ws.join("notes")).unwrap().count(), 1);
    }

    #[test]
    fn the_root_and_escapes_are_refused() {
        let (d, _ws, r) = ws();
        for p in [".", "", "./"] {
            assert!(matches!(r.write(p, b"x"), Err(PathError::Bad(_))), "{p}");
        }
        for p in ["../x", "/etc/passwd", "a/../../x"] {
            assert!(matches!(r.write(p, b"x"), Err(PathError::Escape(_))), "{p}");
        }
        // nothing appeared next to the workspace
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn links_are_never_followed() {
        let (d, ws, r) = ws();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), ws.join("s")).unwrap();
        assert!(matches!(r.read("s"), Err(PathError::Link(_))));
        assert!(matches!(r.read("out/secret"), Err(PathError::Link(_))));
        assert!(matches!(r.write("out/new", b"x"), Err(PathError::Link(_))));
        assert!(matches!(r.list("out"), Err(PathError::Link(_))));
        // writing over a link replaces the link, not its target
        r.write("s", b"mine").unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"s");
        assert_eq!(std::fs::read(ws.join("s")).unwrap(), b"mine");
        assert!(!outside.join("new").exists());
    }

    #[test]
    fn a_fifo_does_not_hang_a_read() {
        let (_d, ws, r) = ws();
        let st = std::process::Command::new("mkfifo")
            .arg(ws.join("pipe"))
            .status()
            .unwrap();
        assert!(st.success());
        assert!(
            matches!(r.read("pipe"), Err(PathError::Io(m)) if m.contains("not a regular file"))
        );
    }
}
