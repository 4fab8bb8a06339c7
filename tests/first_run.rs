//! What a new user meets first (issue 14): the interactive chat through a
//! real pseudo-terminal (`/stop` and Ctrl-C while a reply streams), the
//! CLI's messages, `config validate` reporting every problem, a missing
//! models directory, and the prompt saying when no devices are set up.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A child process on a pseudo-terminal: what it prints is collected, what
/// the test types goes to its keyboard (Ctrl-C is the byte 0x03, which the
/// terminal turns into SIGINT for the child's process group).
struct Pty {
    child: std::process::Child,
    master: std::fs::File,
    out: Arc<Mutex<String>>,
}

#[allow(unsafe_code)]
fn open_pty() -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two fds into the given ints; no name, termios
    // or window size is passed.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty failed");
    // SAFETY: both fds were just opened and are owned here only.
    unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
}

impl Pty {
    #[allow(unsafe_code)]
    fn spawn(args: &[&str]) -> Pty {
        use std::os::unix::process::CommandExt;
        let (master, slave) = open_pty();
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("HEARTH_LOG", "warn")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new
        // session, and the terminal on fd 0 as its controlling terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn hearth chat");
        let master = std::fs::File::from(master);
        let out = Arc::new(Mutex::new(String::new()));
        let (mut r, o) = (master.try_clone().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Pty { child, master, out }
    }

    fn type_(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the output has `needle` `n` times.
    fn wait_for(&self, needle: &str, n: usize, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.text().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{n}) within {wait:?}; the terminal shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited_within(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/stop` typed while a reply streams stops it at once (5b0ef1f read it
/// only after the reply: "Nothing to stop."); Ctrl-C during a reply stops
/// it too and the client stays; Ctrl-C at the prompt leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_ctrl_c_abort_a_streaming_reply() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_env(
        dir.path(),
        &config_with(&fake.url, ""),
        &[("HEARTH_LOG", "debug")],
    );
    let token = d.token();
    let mut p = Pty::spawn(&["chat", "--url", &d.url, "--token", &token]);
    p.wait_for("> ", 1, Duration::from_secs(10));

    // 10 chunks 1 s apart: 10 s unless stopped
    p.type_("tell me slowly [slow:1000]\n");
    p.wait_for("part0", 1, Duration::from_secs(10));
    let t = Instant::now();
    p.type_("/stop\n");
    p.wait_for("[stopped]", 1, Duration::from_secs(5));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!p.text().contains("Nothing to stop"), "{}", p.text());
    assert!(
        !p.text().contains("part9"),
        "the reply went on: {}",
        p.text()
    );
    p.wait_for("> ", 2, Duration::from_secs(5));

    p.type_("again slowly [slow:1000]\n");
    p.wait_for("part0", 2, Duration::from_secs(10));
    p.type_("\x03");
    p.wait_for("[stopped]", 2, Duration::from_secs(5));
    assert!(
        p.exited_within(Duration::from_millis(300)).is_none(),
        "one Ctrl-C during a reply stops the reply, not the client:\n{}",
        p.text()
    );
    p.wait_for("> ", 3, Duration::from_secs(5));

    // "[stopped]" is printed for the daemon's `aborted` event: the run
    // itself was stopped, not only the printing
    // Ctrl-C at the prompt leaves the client
    p.type_("\x03");
    let st = p.exited_within(Duration::from_secs(5));
    assert!(
        st.is_some(),
        "Ctrl-C at the prompt did not quit:\n{}",
        p.text()
    );
    assert!(
        !d.log().contains("connection error"),
        "the client closes properly:\n{}",
        d.log()
    );
}

/// Two Ctrl-C during one reply: the first asks the daemon to stop the run,
/// the second quits the client at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_quits() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let token = d.token();
    let mut p = Pty::spawn(&["chat", "--url", &d.url, "--token", &token]);
    p.wait_for("> ", 1, Duration::from_secs(10));
    p.type_("long one [slow:1000]\n");
    p.wait_for("part0", 1, Duration::from_secs(10));
    p.type_("\x03");
    p.wait_for("Ctrl-C again quits", 1, Duration::from_secs(5));
    p.type_("\x03");
    assert!(
        p.exited_within(Duration::from_secs(3)).is_some(),
        "{}",
        p.text()
    );
}

fn hearth(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("HEARTH_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run hearth");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `config validate` on the two configs from issue 14: every independent
/// problem, unknown keys by name, no follow-on messages.
#[test]
fn config_validate_reports_each_problem_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hearth.toml");
    let f_s = f.to_str().unwrap();
    std::fs::write(
        &f,
        "[gateway]\nbind = \"0.0.0.0:18789\"\nmax_connections = \"32\"\n",
    )
    .unwrap();
    let (code, _, err) = hearth(&["config", "validate", "--config", f_s], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("gateway.max_connections"), "{err}");
    assert!(err.contains("gateway.token: required because"), "{err}");

    std::fs::write(
        &f,
        "[providers.fake]\nkind = \"openai\"\n[agents.defaults]\nmodel = \"nosuch/x\"\nmax_step = 3\n",
    )
    .unwrap();
    let (code, _, err) = hearth(&["config", "validate", "--config", f_s], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("unknown key `max_step` (did you mean `max_steps`?)"),
        "{err}"
    );
    assert!(err.contains("\"nosuch\", which is not configured"), "{err}");
    assert!(!err.contains("no model"), "a follow-on message: {err}");
    assert!(err.contains("2 configuration problem"), "{err}");
}

/// A `[models] dir` that does not exist: a problem for `validate`; `serve`
/// runs without the local model and `status` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_models_dir_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/models");
    let cfg = format!("[models]\ndir = \"{}\"\n", missing.display());
    let f = dir.path().join("v.toml");
    std::fs::write(&f, &cfg).unwrap();
    let (code, _, err) = hearth(
        &["config", "validate", "--config", f.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("models.dir") && err.contains("is not a directory"),
        "{err}"
    );

    let d = Daemon::start_env(dir.path(), &cfg, &[("HEARTH_LOG", "debug")]);
    let (code, out, err) = hearth(&["status", "--url", &d.url, "--token", &d.token()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("local     NOT available: [models] dir") && out.contains("does not exist"),
        "{out}"
    );
    assert!(d.log().contains("is not a directory"), "{}", d.log());
    // the CLI said goodbye properly: no reset logged (5b0ef1f: at info)
    assert!(!d.log().contains("connection error"), "{}", d.log());
}

/// Errors read as messages; the code only with --verbose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_are_messages() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let t = d.token();
    let args = [
        "chat",
        "--url",
        &d.url,
        "--token",
        &t,
        "--session",
        "agent:ghost:main",
        "hi",
    ];
    let (code, _, err) = hearth(&args, &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("hearth: ") && err.contains("ghost"),
        "{err}"
    );
    assert!(!err.contains("INVALID_REQUEST"), "{err}");
    let mut v = args.to_vec();
    v.insert(0, "--verbose");
    let (_, _, err) = hearth(&v, &[]);
    assert!(err.contains("INVALID_REQUEST: "), "{err}");
}

/// Issue 14: "turn off the kitchen light" with no MQTT got "You're
/// welcome."; the model is now told that no devices are set up and how
/// the owner sets them up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_is_told_when_no_devices_are_set_up() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let c = d.client().await;
    send(&c, "main", "turn off the kitchen light", "k1").await;
    let t = terminal_within(&c, "k1", Duration::from_secs(20)).await;
    assert_eq!(t["state"], "final", "{t}");
    let req = fake.log.all().pop().unwrap();
    let system = req["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("no devices are set up") && system.contains("[channels.mqtt]"),
        "{system}"
    );
}

/// scripts/install puts the binary, the models and a user unit in place,
/// and the installed binary finds the installed models on its own.
#[test]
fn scripts_install_puts_everything_in_place() {
    let home = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install");
    let models = common::models_dir();
    let o = Command::new("bash")
        .arg(script)
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env("HEARTH_BIN", bin())
        .env("HEARTH_MODELS", &models)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    let h = home.path();
    let installed = h.join(".local/bin/hearth");
    assert!(installed.is_file(), "{out}");
    let unit = std::fs::read_to_string(h.join(".config/systemd/user/hearth.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={} serve", installed.display())),
        "{unit}"
    );
    assert!(
        out.contains("add") && out.contains(".local/bin to your PATH"),
        "{out}"
    );
    // found next to the binary's prefix, with no variable pointing there
    let o = Command::new(&installed)
        .args(["models", "check"])
        .env_remove("HEARTH_MODELS_DIR")
        .env("HOME", h)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains(&h.join(".local/share/hearth/models").display().to_string()),
        "{text}"
    );
    assert!(
        !text.contains("Text("),
        "the reply is text, not Rust debug output: {text}"
    );
}

/// The package promises a static binary: build-deb refuses a dynamic one
/// (this dev build); CI builds the real packages from the static builds.
#[test]
fn build_deb_refuses_a_dynamically_linked_binary() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-deb"))
        .arg(bin())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("is dynamically linked"), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
