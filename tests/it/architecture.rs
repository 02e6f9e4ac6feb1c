//! The shape of the code, checked: no import cycle between top-level modules, every source
//! file says what it is for, and none is too long to read in one sitting (ARCHITECTURE.md,
//! "Invariants").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file, in lines before its `#[cfg(test)]` module.
const MAX_LINES: usize = 700;

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    files.sort();
    files
}

/// The top-level module a file belongs to (`src/run/dispatch/mod.rs` → `run`).
fn module_of(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let relative = path.strip_prefix(&src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The code of a file before its unit tests.
fn non_test_code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The top-level modules a piece of code refers to through `crate::`.
fn references(code: &str) -> BTreeSet<String> {
    let ident = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each item at depth 0.
            let mut depth = 0;
            let mut item_start = true;
            for (index, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[index..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = sources().iter().map(|path| module_of(path)).collect();
    for path in sources() {
        let module = module_of(&path);
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let targets = edges.entry(module.clone()).or_default();
        for target in references(non_test_code(&text)) {
            if target != module && modules.contains(&target) {
                targets.insert(target);
            }
        }
    }
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        if let Some(cycle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    // The entry point's types stay at the entry point.
    for (module, targets) in &edges {
        if !["app", "config"].contains(&module.as_str()) {
            assert!(
                !targets.contains("cli"),
                "{module} imports cli; only app and config may"
            );
        }
    }
}

#[test]
fn every_source_file_says_what_it_is_for_and_is_short_enough() {
    for path in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display();
        if !path.ends_with("main.rs") {
            assert!(text.starts_with("//!"), "{name} has no //! doc comment");
        }
        let lines = non_test_code(&text).lines().count();
        assert!(lines <= MAX_LINES, "{name} has {lines} lines of code");
    }
}

#[test]
fn references_are_read_from_paths_and_use_groups() {
    let code = "use crate::job::{Job, JobId};\nuse crate::{exit::Fatal, run::{dispatch, poll}};\nlet x = crate::now_ms();";
    let found: Vec<String> = references(code).into_iter().collect();
    assert_eq!(found, ["exit", "job", "now_ms", "run"]);
}
