//! Every TOML example in README.md and docs/*.md, and the packaged
//! hearth.toml, is a config `hearth config validate` accepts: extracted
//! from the Markdown and checked by the same code, with placeholders for
//! the `${VAR}` secrets. Every block stands on its own (a fragment that
//! would not validate alone is written as a whole config).

use std::path::{Path, PathBuf};

use hearth::config::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `${VAR}` as an owner would set it: a secret-looking value; variables
/// with a `:-default` that names an address keep their default.
fn env(k: &str) -> Option<String> {
    match k {
        "HEARTH_BIND" => None,
        _ => Some(format!("placeholder-{}-0123456789", k.to_lowercase())),
    }
}

/// (line, text) of each ```toml block.
fn toml_blocks(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in md.lines().enumerate() {
        let t = line.trim_start();
        match &mut cur {
            None if t.starts_with("```toml") => cur = Some((i + 2, String::new())),
            Some(_) if t.starts_with("```") => out.push(cur.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(cur.is_none(), "an unclosed ```toml block");
    out
}

fn docs() -> Vec<PathBuf> {
    let mut v = vec![root().join("README.md")];
    let mut d: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    d.sort();
    v.extend(d);
    v
}

/// Files an example names that validation opens (the MQTT CA file) are
/// pointed at a real file.
fn with_files(text: &str) -> String {
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    text.lines()
        .map(|l| match l.trim_start().strip_prefix("ca_file = \"") {
            Some(rest) => {
                let after = rest.split_once('"').map_or("", |(_, a)| a);
                format!("ca_file = \"{ca}\"{after}")
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(path: &Path, line: usize, text: &str, bad: &mut Vec<String>) {
    if let Err(e) = Config::from_str(&with_files(text), Some(path), &env) {
        bad.push(format!("{}:{line}:\n{e}", path.display()));
    }
}

#[test]
fn every_toml_example_in_the_docs_validates() {
    let mut bad = Vec::new();
    let mut n = 0;
    for p in docs() {
        let md = std::fs::read_to_string(&p).unwrap();
        for (line, text) in toml_blocks(&md) {
            n += 1;
            check(&p, line, &text, &mut bad);
        }
    }
    assert!(
        n >= 8,
        "only {n} TOML examples found: is the extraction broken?"
    );
    assert!(
        bad.is_empty(),
        "examples that do not validate:\n\n{}",
        bad.join("\n\n")
    );
}

#[test]
fn the_packaged_configs_validate() {
    let mut bad = Vec::new();
    for p in [
        "packaging/deb/hearth.toml",
        "yocto/meta-hearth/recipes-core/hearth/files/hearth.toml",
    ] {
        let p = root().join(p);
        check(&p, 1, &std::fs::read_to_string(&p).unwrap(), &mut bad);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
}

/// The extraction itself: a broken example is caught (this test fails
/// if `check` stopped reporting).
#[test]
fn a_broken_example_is_caught() {
    let md = "text\n```toml\n[gateway]\nbind = \"nowhere\"\n```\n";
    let blocks = toml_blocks(md);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, 3);
    let mut bad = Vec::new();
    check(Path::new("x.md"), blocks[0].0, &blocks[0].1, &mut bad);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("gateway.bind"), "{bad:?}");
}
