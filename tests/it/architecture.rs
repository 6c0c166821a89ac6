//! The crate's layers, as `src/lib.rs` draws them: the top-level modules form no circle, the domain
//! imports nothing of ours, and the two adapters (Graph and storage) know neither each other nor
//! the edges. Read from the source, so a `use` that breaks a rule fails here with its file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `(from, to) → files`: every `crate::to` named in a file of top-level module `from`.
fn module_edges() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let from = relative
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            if from == "lib" || from == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let name_at = |at: usize| -> String {
                text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect()
            };
            for (at, _) in text.match_indices("crate::") {
                let after = at + "crate::".len();
                // `crate::{a, b::c}` names several modules at once.
                let named: Vec<String> = if text[after..].starts_with('{') {
                    let group = &text[after + 1..after + text[after..].find('}').unwrap()];
                    group
                        .split(',')
                        .map(|item| name_at(after + 1 + group.find(item.trim()).unwrap()))
                        .collect()
                } else {
                    vec![name_at(after)]
                };
                for to in named {
                    if !to.is_empty() && to != from {
                        edges
                            .entry((from.clone(), to))
                            .or_default()
                            .insert(relative.clone());
                    }
                }
            }
        }
    }
    edges
}

#[test]
fn the_source_is_read_as_it_is_written() {
    let edges = module_edges();
    // Edges the map names: a reader that found none would pass every rule.
    for (from, to) in [
        ("app", "functions"),
        ("functions", "domain"),
        ("store", "domain"),
    ] {
        assert!(
            edges.contains_key(&(from.to_owned(), to.to_owned())),
            "{from} -> {to} not found"
        );
    }
}

#[test]
fn top_level_modules_form_no_circle() {
    let edges = module_edges();
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().insert(to);
    }
    let reaches = |start: &str, goal: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(at) = stack.pop() {
            if at == goal {
                return true;
            }
            if seen.insert(at) {
                stack.extend(next.get(at).into_iter().flatten().copied());
            }
        }
        false
    };
    let circles: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| reaches(to, from))
        .map(|((from, to), files)| format!("{from} -> {to} (in {files:?})"))
        .collect();
    assert!(
        circles.is_empty(),
        "edges that close a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_domain_imports_nothing_of_ours_and_adapters_know_neither_each_other_nor_the_edges() {
    const EDGES: [&str; 7] = [
        "api",
        "app",
        "auth",
        "error",
        "functions",
        "host",
        "services",
    ];
    let edges = module_edges();
    let mut broken = Vec::new();
    for ((from, to), files) in &edges {
        let forbidden = match from.as_str() {
            "domain" => true,
            "graph" => EDGES.contains(&to.as_str()) || to == "store",
            "store" => EDGES.contains(&to.as_str()) || to == "graph",
            _ => false,
        };
        if forbidden {
            broken.push(format!("{from} -> {to} (in {files:?})"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
