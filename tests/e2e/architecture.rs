//! The dependency rule: the kernel and every domain crate stay free of web, ORM, database and
//! runtime crates, directly and transitively (normal dependencies).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Crate names (exact) no domain may reach.
const FORBIDDEN_EXACT: &[&str] = &[
    "tokio", "hyper", "redis", "reqwest", "mio", "axum", "diesel",
];
/// Crate name prefixes no domain may reach.
const FORBIDDEN_PREFIXES: &[&str] = &[
    "actix",
    "sea-orm",
    "sea-query",
    "sqlx",
    "apalis",
    "tokio-",
    "hyper-",
];

fn forbidden(name: &str) -> bool {
    FORBIDDEN_EXACT.contains(&name) || FORBIDDEN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A package graph: package id → (name, normal dependencies).
type Graph = BTreeMap<String, (String, Vec<String>)>;

/// For each root, the first forbidden crate reachable and the path to it.
fn violations(graph: &Graph, roots: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for root in roots {
        let mut queue = VecDeque::from([vec![root.clone()]]);
        let mut seen = BTreeSet::from([root.clone()]);
        while let Some(path) = queue.pop_front() {
            let Some((name, deps)) = graph.get(path.last().unwrap()) else {
                continue;
            };
            if forbidden(name) {
                let names: Vec<&str> = path.iter().map(|id| graph[id].0.as_str()).collect();
                found.push(names.join(" -> "));
                break;
            }
            for dep in deps {
                if seen.insert(dep.clone()) {
                    let mut next = path.clone();
                    next.push(dep.clone());
                    queue.push_back(next);
                }
            }
        }
    }
    found
}

fn workspace_graph() -> (Graph, Vec<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();

    let names: BTreeMap<String, (String, String)> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["manifest_path"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let mut graph = Graph::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap().to_owned();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|kind| kind["kind"].is_null())
            })
            .map(|dep| dep["pkg"].as_str().unwrap().to_owned())
            .collect();
        graph.insert(id.clone(), (names[&id].0.clone(), deps));
    }
    let roots = names
        .iter()
        .filter(|(_, (name, manifest))| {
            name == "keel-kernel" || manifest.contains("/crates/domains/")
        })
        .map(|(id, _)| id.clone())
        .collect();
    (graph, roots)
}

#[test]
fn kernel_and_domains_reach_no_web_orm_database_or_runtime_crate() {
    let (graph, roots) = workspace_graph();
    let root_names: Vec<&str> = roots.iter().map(|id| graph[id].0.as_str()).collect();
    assert!(root_names.contains(&"keel-kernel"), "{root_names:?}");
    assert!(root_names.contains(&"keel-releases"), "{root_names:?}");
    let found = violations(&graph, &roots);
    assert!(
        found.is_empty(),
        "the dependency rule is broken (see README, \"Layout\"):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_finds_a_transitive_violation() {
    let graph: Graph = [
        ("domain", ("keel-widgets", vec!["helper"])),
        ("helper", ("some-helper", vec!["orm"])),
        ("orm", ("sea-orm", vec![])),
        ("clean", ("keel-clean", vec!["serde"])),
        ("serde", ("serde", vec![])),
    ]
    .into_iter()
    .map(|(id, (name, deps))| {
        (
            id.to_owned(),
            (
                name.to_owned(),
                deps.into_iter().map(str::to_owned).collect(),
            ),
        )
    })
    .collect();
    assert_eq!(
        violations(&graph, &["domain".to_owned(), "clean".to_owned()]),
        ["keel-widgets -> some-helper -> sea-orm"]
    );
    assert!(forbidden("tokio") && forbidden("actix-web") && forbidden("sqlx-core"));
    assert!(!forbidden("serde") && !forbidden("chrono"));
}
