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

// ---- The import table: which top-level module may import which ----
//
// The table lives in docs/ARCHITECTURE.md ("## Import table") and is read from there,
// so the document and this test cannot disagree. Test code (`tests.rs` files and
// `#[cfg(test)] mod … { }` blocks) is not checked: fixtures may come from anywhere.

use std::collections::{BTreeMap, BTreeSet};

/// module → the modules it may import, from the markdown table under `## Import table`.
fn import_table(markdown: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut table = BTreeMap::new();
    let Some(start) = markdown.find("\n## Import table") else {
        return table;
    };
    let section = &markdown[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        let [module, may, ..] = cells.as_slice() else {
            continue;
        };
        let names = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let Some(module) = names(module).into_iter().next() else {
            continue; // the header and separator rows
        };
        table.insert(module, names(may).into_iter().collect());
    }
    table
}

/// The source with comments, string and char literals blanked out (so a doc comment or
/// a message naming `crate::sim` is not an import).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (i == 0 || !ident(b[i - 1])) && matches!(next, Some('"') | Some('#'))
        {
            // A raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && b.get(i + 1) == Some(&'\\') {
            // An escaped char literal '\n', '\''.
            i += 2;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` without `#[cfg(test)] mod NAME { … }` blocks.
fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_mod_block = after.starts_with("mod ")
            && after
                .find(['{', ';'])
                .is_some_and(|i| after.as_bytes()[i] == b'{');
        if !is_mod_block {
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        }
        let open = after.find('{').unwrap_or(0);
        let mut depth = 0;
        let mut end = after.len();
        for (i, ch) in after[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The module path of a file under `src/` (`plan/render.rs` → [plan, render]); `None`
/// for the crate roots and for test files.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().to_string())
        .collect();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem == "tests" {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// The top-level modules a file's code names through `crate::…` (also grouped:
/// `crate::{a, b::c}`) or through enough `super::` to reach the crate root.
fn imported_modules(module: &[String], source: &str) -> BTreeSet<String> {
    let code = without_test_modules(&code_only(source));
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let read_ident = |s: &str| -> String { s.chars().take_while(|c| ident_char(*c)).collect() };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| ident_char(c) || c == '$' || c == ':') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && ident_char(c) && depth == 1 => {
                        found.insert(read_ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(read_ident(rest));
        }
    }
    // `super::super::x` from `a::b` reaches the crate root: `x` is a top-level module.
    let mut from = 0;
    while let Some(off) = code[from..].find("super::") {
        let at = from + off;
        from = at + "super::".len();
        if code[..at].ends_with("::") || code[..at].chars().next_back().is_some_and(ident_char) {
            continue;
        }
        let mut rest = &code[at..];
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        if ups >= module.len() {
            found.insert(read_ident(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self" && m != "super");
    if let Some(own) = module.first() {
        found.remove(own);
    }
    found
}

/// Every edge in `files` (path under `src/`, content) that the table does not allow,
/// and every module the table does not list, as messages.
fn forbidden_edges(
    files: &[(std::path::PathBuf, String)],
    table: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut bad = Vec::new();
    let mut unlisted = BTreeSet::new();
    for (rel, source) in files {
        let Some(module) = module_path(rel) else {
            continue;
        };
        let Some(top) = module.first() else { continue };
        let Some(allowed) = table.get(top) else {
            unlisted.insert(top.clone());
            continue;
        };
        for m in imported_modules(&module, source) {
            if !allowed.contains(&m) {
                bad.push(format!(
                    "src/{}: `{top}` imports `{m}`, which the import table in docs/ARCHITECTURE.md does not allow (move the code, or add the edge to the table with a one-line reason)",
                    rel.display()
                ));
            }
        }
    }
    for m in unlisted {
        bad.push(format!(
            "module `{m}` has no row in the import table of docs/ARCHITECTURE.md; add one saying what it may import"
        ));
    }
    bad
}

#[test]
fn imports_follow_the_table_in_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let table = import_table(&doc);
    assert!(
        table.len() >= 10,
        "docs/ARCHITECTURE.md has no `## Import table` with a row per module: {table:?}"
    );
    let src = root.join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<_> = paths
        .iter()
        .map(|p| {
            (
                p.strip_prefix(&src).unwrap().to_path_buf(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    // The checker must have seen real edges, or it is checking nothing.
    let cli_edges = imported_modules(
        &["cli".to_string()],
        &std::fs::read_to_string(src.join("cli/mod.rs")).unwrap(),
    );
    assert!(cli_edges.contains("ops"), "{cli_edges:?}");
    let bad = forbidden_edges(&files, &table);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // Edges the design forbids outright, whatever the table says.
    for engine in [
        "spec",
        "model",
        "plan",
        "drift",
        "state",
        "providers",
        "apply",
        "ops",
    ] {
        assert!(
            !table[engine].contains("sim"),
            "the engine never imports `sim`, but the table lets `{engine}` do so"
        );
    }
    for lower in ["spec", "state", "sim"] {
        assert!(
            table[lower].is_empty(),
            "`{lower}` imports nothing of anvil"
        );
    }
    for internal in ["state", "providers", "apply", "spec", "model"] {
        assert!(
            !table["cli"].contains(internal),
            "front-ends import `ops`, not `{internal}`"
        );
    }
}

#[test]
fn the_import_checker_catches_a_forbidden_edge() {
    let table = import_table(
        "# x\n\n## Import table\n| module | may import | why |\n|---|---|---|\n| `plan` | `model`, `state` | pure |\n| `sim` | — | alone |\n\n## Next\n| `ignored` | `sim` | |\n",
    );
    assert_eq!(table.len(), 2, "{table:?}");
    assert!(table["sim"].is_empty());
    let file = |path: &str, body: &str| (std::path::PathBuf::from(path), body.to_string());
    // Allowed edges, and mentions that are not imports, pass.
    let ok = file(
        "plan/x.rs",
        "//! Mentions crate::sim in a doc.\nuse crate::model::Model;\nuse crate::state::State;\nconst S: &str = \"crate::sim::x\";\nconst R: &str = r#\"crate::sim\"#;\nfn f<'a>(c: char) -> bool { c == '\"' }\n// crate::sim\n/* crate::sim */\n#[cfg(test)]\nmod tests {\n    use crate::sim::bosh;\n}\n",
    );
    assert_eq!(forbidden_edges(&[ok], &table), Vec::<String>::new());
    // A forbidden edge, in each way a path can be written, is caught and named.
    for body in [
        "use crate::sim::bosh::Thing;\n",
        "use crate::{model::Model, sim};\n",
        "fn f() { let _ = crate::sim::vault::kv::Store::default(); }\n",
        "use super::super::super::sim::x;\n",
    ] {
        let bad = forbidden_edges(&[file("plan/x/y.rs", body)], &table);
        assert_eq!(bad.len(), 1, "{body}: {bad:?}");
        assert!(
            bad[0].contains("src/plan/x/y.rs: `plan` imports `sim`"),
            "{}",
            bad[0]
        );
    }
    // A module without a row is reported too.
    let bad = forbidden_edges(&[file("broker/mod.rs", "use crate::ops;\n")], &table);
    assert!(bad[0].contains("module `broker` has no row"), "{bad:?}");
}

/// Every argument and flag of every command says what it is in `--help`.
#[test]
fn every_argument_has_a_description() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("anvil {} {id}", path.join(" ")));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(format!(
                    "anvil {} {} (the command)",
                    path.join(" "),
                    sub.get_name()
                ));
            }
            path.push(sub.get_name().to_string());
            walk(sub, path, missing);
            path.pop();
        }
    }
    let mut missing = Vec::new();
    walk(&anvil::cli::Cli::command(), &mut Vec::new(), &mut missing);
    assert!(
        missing.is_empty(),
        "arguments without a description in --help: {missing:#?}"
    );
}
