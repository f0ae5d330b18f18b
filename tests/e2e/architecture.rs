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

fn metadata() -> Value {
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
    serde_json::from_slice(&output.stdout).unwrap()
}

fn workspace_graph() -> (Graph, Vec<String>) {
    let metadata = metadata();

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
    assert!(root_names.contains(&"keel-release-notes"), "{root_names:?}");
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

/// Keel's own crates that must never appear among a crate's direct (normal) dependencies:
/// the api is an adapter beside infrastructure, not on top of it; the worker runs jobs without
/// the HTTP crate; only the app composes them.
const FORBIDDEN_EDGES: &[(&str, &[&str])] = &[
    ("keel-kernel", &["*"]),
    ("keel-config", &["*"]),
    (
        "keel-telemetry",
        &["keel-api", "keel-infrastructure", "keel-worker", "keel-app"],
    ),
    (
        "keel-api",
        &[
            "keel-infrastructure",
            "keel-worker",
            "keel-app",
            "keel-migration",
        ],
    ),
    ("keel-worker", &["keel-api", "keel-app"]),
    (
        "keel-infrastructure",
        &["keel-api", "keel-worker", "keel-app"],
    ),
];

/// One workspace crate: its name, whether it is a domain crate, the domains it declares it may
/// use (`[package.metadata.keel] uses-domains = ["identity"]`), and its direct dependencies on
/// other workspace crates.
struct Member {
    name: String,
    domain: bool,
    declared: Vec<String>,
    deps: Vec<String>,
}

fn edge_violations(members: &[Member]) -> Vec<String> {
    let domains: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.domain)
        .map(|m| m.name.as_str())
        .collect();
    let mut found = Vec::new();
    for member in members {
        for dep in &member.deps {
            if let Some((_, banned)) = FORBIDDEN_EDGES.iter().find(|(n, _)| *n == member.name)
                && (banned.contains(&"*") || banned.contains(&dep.as_str()))
            {
                found.push(format!("{} -> {dep}", member.name));
            }
            if member.domain && dep != "keel-kernel" {
                let allowed = domains.contains(dep.as_str())
                    && member.declared.iter().any(|d| format!("keel-{d}") == *dep);
                if !allowed {
                    found.push(format!(
                        "{} -> {dep} (a domain may use the kernel and the domains it declares in [package.metadata.keel] uses-domains)",
                        member.name
                    ));
                }
            }
        }
    }
    found
}

fn members() -> Vec<Member> {
    let metadata = metadata();
    let workspace: BTreeSet<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| Member {
            name: p["name"].as_str().unwrap().to_owned(),
            domain: p["manifest_path"]
                .as_str()
                .unwrap()
                .contains("/crates/domains/"),
            declared: p["metadata"]["keel"]["uses-domains"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect(),
            deps: p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|n| workspace.contains(n))
                .map(str::to_owned)
                .collect(),
        })
        .collect()
}

#[test]
fn keels_own_crates_depend_inward_only() {
    let members = members();
    assert!(members.iter().any(|m| m.name == "keel-api"));
    let found = edge_violations(&members);
    assert!(
        found.is_empty(),
        "Keel's own dependency edges (see docs/ARCHITECTURE.md):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_edge_checker_finds_each_kind_of_violation() {
    let member = |name: &str, domain: bool, declared: &[&str], deps: &[&str]| Member {
        name: name.to_owned(),
        domain,
        declared: declared.iter().map(|d| (*d).to_owned()).collect(),
        deps: deps.iter().map(|d| (*d).to_owned()).collect(),
    };
    let members = [
        member(
            "keel-api",
            false,
            &[],
            &["keel-kernel", "keel-infrastructure"],
        ),
        member("keel-worker", false, &[], &["keel-api"]),
        member("keel-billing", true, &[], &["keel-kernel", "keel-identity"]),
        member("keel-invoices", true, &["identity"], &["keel-identity"]),
        member("keel-identity", true, &[], &["keel-kernel"]),
        member("keel-kernel", false, &[], &["keel-config"]),
    ];
    let found = edge_violations(&members);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("keel-api -> keel-infrastructure"));
    assert!(found[1].starts_with("keel-worker -> keel-api"));
    assert!(found[2].starts_with("keel-billing -> keel-identity"));
    assert!(found[3].starts_with("keel-kernel -> keel-config"));
}
