//! The codebase checks itself: every module, test file and benchmark has a `//!` doc,
//! and the docs (README.md, docs/*.md) name only commands and flags the CLI has.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_has_a_doc_comment() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc: {missing:#?}"
    );
}

#[test]
fn every_test_and_benchmark_file_has_a_doc_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("tests"), &mut files);
    rust_files(&root.join("benches"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "test or benchmark files without a `//!` doc saying what they check: {missing:#?}"
    );
}

fn doc_files() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    let mut more: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

fn help(args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_anvil"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}

/// Every `--flag` in an inline `anvil CMD [SUB] ...` example is one that
/// `anvil CMD [SUB] --help` lists.
#[test]
fn docs_name_only_existing_flags() {
    for doc in doc_files() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (i, _) in text.match_indices("`anvil ") {
            let Some(end) = text[i + 1..].find('`') else {
                continue;
            };
            let span = &text[i + 7..i + 1 + end];
            let tokens: Vec<&str> = span.split_whitespace().collect();
            let Some(cmd) = tokens.first() else { continue };
            let mut path = vec![*cmd];
            let Some(mut h) = help(&path) else { continue };
            if let Some(sub) = tokens.get(1).filter(|t| {
                t.starts_with(|c: char| c.is_ascii_lowercase())
                    && t.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            }) {
                path.push(sub);
                if let Some(sh) = help(&path) {
                    h = sh;
                }
            }
            for t in &tokens {
                let flag: String = t
                    .trim_start_matches('[')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !flag.starts_with("--") || flag.len() < 3 {
                    continue;
                }
                let listed = [' ', '\n', '=', ',']
                    .iter()
                    .any(|c| h.contains(&format!("{flag}{c}")));
                assert!(
                    listed,
                    "{} names `anvil {}` with `{flag}`, which `anvil {} --help` does not list",
                    doc.display(),
                    span,
                    path.join(" ")
                );
            }
        }
    }
}

#[test]
fn docs_name_only_existing_commands() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_anvil"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in doc_files() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let doc = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
        for (i, _) in text.match_indices("`anvil ") {
            let cmd: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if cmd.is_empty() {
                continue;
            }
            assert!(
                help.contains(&format!("  {cmd} ")) || help.contains(&format!("  {cmd}\n")),
                "{doc} names `anvil {cmd}`, which `anvil --help` does not list"
            );
        }
    }
}
