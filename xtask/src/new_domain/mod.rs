//! `cargo xtask new-domain`: an owner-scoped resource in the shape of `projects`, generated from
//! a spec (`crates/domains/<name>/domain.toml`) and the templates in `xtask/templates`, which
//! are laid out like their output.
//!
//! Two kinds of files come out. *Generated* files start with an `@generated` line and are
//! rewritten by `--regenerate` (and compared by `cargo test` for `projects`): the domain's
//! model, policy, repository, error, service and testing modules, the infrastructure module,
//! the api module and the e2e module. *Scaffolds* are written once, when the domain is created,
//! and belong to the team from then on: the domain's `Cargo.toml`, `lib.rs` and `rules.rs`,
//! the `custom.rs` beside each generated module, and the migration (history is never
//! regenerated). Registration is one line per layer, at the `keel:new-domain:<slot>` markers.
//!
//! Everything is planned in memory and checked first (name free, every marker present), so a
//! refused run writes nothing.

pub(crate) mod check;
mod context;
mod spec;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use xshell::{Shell, cmd};

pub(crate) use spec::Spec;

use self::context::Context;

/// Who owns a file the templates make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Rewritten from the spec by `--regenerate`.
    Generated,
    /// Written once; the team's from then on.
    Scaffold,
}

macro_rules! template {
    ($path:literal, $kind:ident) => {
        (
            $path,
            Kind::$kind,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $path)),
        )
    };
}

/// Every template: its path under `xtask/templates` (`__name__` and `__migration__` are
/// replaced; `.j2` is dropped), who owns its output, and its text.
const TEMPLATES: &[(&str, Kind, &str)] = &[
    template!("crates/domains/__name__/Cargo.toml.j2", Scaffold),
    template!("crates/domains/__name__/src/lib.rs.j2", Scaffold),
    template!("crates/domains/__name__/src/rules.rs.j2", Scaffold),
    template!("crates/domains/__name__/src/model.rs.j2", Generated),
    template!("crates/domains/__name__/src/policy.rs.j2", Generated),
    template!("crates/domains/__name__/src/repository.rs.j2", Generated),
    template!("crates/domains/__name__/src/error.rs.j2", Generated),
    template!("crates/domains/__name__/src/service.rs.j2", Generated),
    template!("crates/domains/__name__/src/testing.rs.j2", Generated),
    template!("crates/infrastructure/src/__name__/mod.rs.j2", Generated),
    template!("crates/infrastructure/src/__name__/custom.rs.j2", Scaffold),
    template!("crates/api/src/__name__/mod.rs.j2", Generated),
    template!("crates/api/src/__name__/custom.rs.j2", Scaffold),
    template!("migration/src/__name__/mod.rs.j2", Scaffold),
    template!("migration/src/__name__/__migration__.rs.j2", Scaffold),
    template!("tests/e2e/__name__/mod.rs.j2", Generated),
    template!("tests/e2e/__name__/custom.rs.j2", Scaffold),
];

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    /// Relative to the workspace.
    pub(crate) path: String,
    pub(crate) kind: Kind,
    pub(crate) content: String,
}

/// Formats Rust source as `cargo fmt` would (edition 2024).
fn rustfmt(source: &str, path: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running rustfmt (install it with `rustup component add rustfmt`)")?;
    child
        .stdin
        .take()
        .context("rustfmt's stdin")?
        .write_all(source.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "the template for {path} rendered invalid Rust:\n{}\n--- rendered ---\n{source}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The `doc` filter: `text` wrapped to 88 characters a line, later lines starting with
/// `prefix` (e.g. `"    /// "`), so long documentation from a spec stays readable.
fn wrap_doc(text: &str, prefix: &str) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().map(|l| l.len()).unwrap_or_default();
        if line > 0 && line + 1 + word.len() > 88 {
            lines.push(String::new());
        }
        if let Some(current) = lines.last_mut() {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
    }
    lines.join(&format!("\n{prefix}"))
}

/// Every file of `spec`, rendered and formatted; `migration` names its migration module.
pub(crate) fn render(spec: &Spec, migration: &str) -> anyhow::Result<Vec<Rendered>> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter("doc", wrap_doc);
    let context = minijinja::Value::from_serialize(Context::new(spec, migration));
    let mut files = Vec::new();
    for (template, kind, source) in TEMPLATES {
        let path = template
            .trim_end_matches(".j2")
            .replace("__name__", &spec.name)
            .replace("__migration__", migration);
        let text = env
            .render_str(source, &context)
            .with_context(|| format!("rendering {template}"))?;
        let mut content = if path.ends_with(".rs") {
            rustfmt(&text, &path)?
        } else {
            text
        };
        if *kind == Kind::Generated {
            let header = format!(
                "// @generated from {} by `cargo xtask new-domain`; edit the spec\n// or xtask/templates, then run `cargo xtask new-domain --regenerate {}`.\n// Hand-written code goes in the files without this header.\n",
                spec::spec_path(&spec.name),
                spec.name
            );
            content.insert_str(0, &header);
        }
        files.push(Rendered {
            path,
            kind: *kind,
            content,
        });
    }
    Ok(files)
}

/// The spec of the existing domain `name`, which must name itself `name`.
fn existing(root: &Path, name: &str) -> anyhow::Result<Spec> {
    ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "`{name}` is not a domain name"
    );
    let spec = Spec::load(&root.join(spec::spec_path(name)))?;
    ensure!(
        spec.name == name,
        "{} names `{}`, not `{name}`",
        spec::spec_path(name),
        spec.name
    );
    Ok(spec)
}

/// The generated files of an existing domain that differ from what its spec renders now.
pub(crate) fn stale_files(root: &Path, name: &str) -> anyhow::Result<Vec<String>> {
    let spec = existing(root, name)?;
    let mut stale = Vec::new();
    for file in render(&spec, "unused")? {
        if file.kind != Kind::Generated {
            continue;
        }
        let on_disk = std::fs::read_to_string(root.join(&file.path)).unwrap_or_default();
        if on_disk != file.content {
            stale.push(file.path);
        }
    }
    Ok(stale)
}

/// Rewrites the generated files of an existing domain from its spec; scaffolds and everything
/// the team wrote stay as they are.
pub(crate) fn regenerate(root: &Path, name: &str) -> anyhow::Result<()> {
    let spec = existing(root, name)?;
    let files: Vec<Rendered> = render(&spec, "unused")?
        .into_iter()
        .filter(|file| file.kind == Kind::Generated)
        .collect();
    // Never overwrite a file someone wrote by hand: every file replaced must carry the header.
    for file in &files {
        if let Ok(current) = std::fs::read_to_string(root.join(&file.path)) {
            ensure!(
                current.starts_with("// @generated"),
                "{} has no `@generated` header: it is hand-written, so regeneration stops here (move your code to a file without the header, or delete this one)",
                file.path
            );
        }
    }
    if spec.uses_decimal() {
        let changes = decimal_support(root, Some(name))?;
        for (path, content) in apply_in_memory(root, &changes)? {
            std::fs::write(&path, content)?;
        }
    }
    let mut changed = Vec::new();
    for file in files {
        let path = root.join(&file.path);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(file.content.as_str()) {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &file.content)
                .with_context(|| format!("writing {}", file.path))?;
            changed.push(file.path);
        }
    }
    if changed.is_empty() {
        eprintln!("`{name}` is up to date with its spec");
    } else {
        eprintln!("regenerated:\n  {}", changed.join("\n  "));
    }
    Ok(())
}

/// One change to make.
enum Change {
    /// A new file.
    Create(PathBuf, String),
    /// New lines before a marker comment, indented like it.
    Insert {
        file: PathBuf,
        marker: &'static str,
        text: String,
    },
}

/// Generates the domain; with `build`, regenerates `docs/openapi.json` (which compiles it).
pub(crate) fn run(sh: &Shell, root: &Path, spec: &Spec, build: bool) -> anyhow::Result<()> {
    let changes = plan(root, spec)?;
    let files = apply_in_memory(root, &changes)?;
    for (path, content) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut created: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Create(path, _) => Some(relative(root, path)),
            Change::Insert { .. } => None,
        })
        .collect();
    created.sort();
    eprintln!("created:\n  {}", created.join("\n  "));
    let mut edited: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Insert { file, text, .. } => Some(format!(
                "{} (+{})",
                relative(root, file),
                text.lines().count()
            )),
            Change::Create(..) => None,
        })
        .collect();
    edited.sort();
    eprintln!("registered in (lines added):\n  {}", edited.join("\n  "));

    cmd!(sh, "cargo fmt --all").run()?;
    if build {
        eprintln!("building and regenerating docs/openapi.json …");
        let document = cmd!(sh, "cargo run --quiet --bin api -- openapi").read()?;
        std::fs::write(root.join("docs/openapi.json"), document + "\n")?;
    }
    let kebab = spec.kebab();
    eprintln!(
        "\n`{name}` is ready: /api/v1/{kebab} (permission `{name}:write` for members, `{name}:manage_all` for admins).\nNext:\n  cargo test -p keel-{kebab}                 # domain unit tests\n  cargo test -p keel-e2e {name}              # over HTTP\n  cargo run --bin api                        # migrates and serves it\nChange fields or docs in crates/domains/{name}/domain.toml and run `cargo xtask new-domain --regenerate {name}`;\nadd rules in rules.rs and the custom.rs files: docs/adding-a-domain.md",
        name = spec.name,
    );
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every migration file, in any feature's folder.
fn migration_files(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("migration/src"))? {
        let entry = entry?;
        if entry.path().is_dir() {
            for inner in std::fs::read_dir(entry.path())? {
                files.push(inner?.file_name().to_string_lossy().into_owned());
            }
        }
    }
    Ok(files)
}

/// Refuses a name another part of Keel already uses.
fn ensure_free(root: &Path, spec: &Spec) -> anyhow::Result<()> {
    let name = &spec.name;
    let kebab = spec.kebab();
    for path in [
        format!("crates/domains/{name}"),
        format!("crates/api/src/{name}"),
        format!("crates/infrastructure/src/{name}"),
        format!("migration/src/{name}"),
        format!("tests/e2e/{name}"),
        format!("tests/e2e/{name}.rs"),
        format!("crates/api/src/{name}.rs"),
        format!("crates/infrastructure/src/{name}.rs"),
        format!("crates/worker/src/{name}.rs"),
        format!("migration/src/{name}.rs"),
    ] {
        ensure!(
            !root.join(&path).exists(),
            "`{name}` already exists ({path}); choose another name or remove it first"
        );
    }
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    ensure!(
        !manifest.contains(&format!("\nkeel-{kebab} = ")),
        "the workspace already has a crate `keel-{kebab}`"
    );
    let suffix = format!("_create_{name}.rs");
    for file in migration_files(root)? {
        ensure!(
            !file.ends_with(&suffix),
            "a migration already creates `{name}` ({file})"
        );
    }
    Ok(())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `mYYYYMMDD_NNNNNN_create_<name>`, after every existing migration (they run sorted by name).
fn migration_module(root: &Path, name: &str) -> anyhow::Result<String> {
    let seconds = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let time = seconds.rem_euclid(86_400);
    let mut stamp = (
        format!("{year:04}{month:02}{day:02}"),
        format!(
            "{:02}{:02}{:02}",
            time / 3_600,
            time % 3_600 / 60,
            time % 60
        )
        .parse::<u32>()?,
    );
    for file in migration_files(root)? {
        let mut parts = file.trim_start_matches('m').splitn(3, '_');
        if !file.starts_with('m') {
            continue;
        }
        if let (Some(date), Some(number)) = (parts.next(), parts.next())
            && date.len() == 8
            && let Ok(number) = number.parse::<u32>()
            && (date.to_owned(), number) >= stamp
        {
            stamp = (date.to_owned(), number + 1);
        }
    }
    Ok(format!("m{}_{:06}_create_{name}", stamp.0, stamp.1))
}

fn plan(root: &Path, spec: &Spec) -> anyhow::Result<Vec<Change>> {
    ensure_free(root, spec)?;
    let name = &spec.name;
    let kebab = spec.kebab();
    let module = migration_module(root, name)?;
    let mut changes: Vec<Change> = render(spec, &module)?
        .into_iter()
        .map(|file| Change::Create(root.join(file.path), file.content))
        .collect();
    changes.push(Change::Create(
        root.join(spec::spec_path(name)),
        spec.to_file()?,
    ));
    let mut insert = |file: &str, marker: &'static str, text: String| {
        changes.push(Change::Insert {
            file: root.join(file),
            marker,
            text,
        });
    };
    // One line per layer (and the dependency in the layer's manifest).
    insert(
        "Cargo.toml",
        "# keel:new-domain:crates",
        format!("keel-{kebab} = {{ path = \"crates/domains/{name}\" }}"),
    );
    for manifest in ["crates/infrastructure/Cargo.toml", "crates/api/Cargo.toml"] {
        insert(
            manifest,
            "# keel:new-domain:deps",
            format!("keel-{kebab}.workspace = true"),
        );
    }
    for lib in [
        "crates/infrastructure/src/lib.rs",
        "crates/api/src/lib.rs",
        "migration/src/lib.rs",
    ] {
        insert(lib, "// keel:new-domain:features", format!("{name},"));
    }
    insert(
        "tests/e2e/main.rs",
        "// keel:new-domain:modules",
        format!("mod {name};"),
    );
    if spec.uses_decimal() {
        changes.extend(decimal_support(root, None)?);
    }
    Ok(changes)
}

/// The `rust_decimal` dependency and sea-orm's decimal support, once; with `domain`, also in
/// that existing domain's manifest (a decimal field added to its spec later).
fn decimal_support(root: &Path, domain: Option<&str>) -> anyhow::Result<Vec<Change>> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let mut changes = Vec::new();
    if !manifest.contains("\nrust_decimal = ") {
        let with_features = manifest.replace(
            "    \"with-uuid\",\n",
            "    \"with-uuid\",\n    \"with-rust_decimal\",\n",
        );
        ensure!(
            with_features.matches("with-rust_decimal").count() == 2,
            "could not find the sea-orm and sea-orm-migration feature lists in Cargo.toml"
        );
        changes.push(Change::Create(
            root.join("Cargo.toml"),
            with_features.replacen(
                "\nuuid = ",
                "\nrust_decimal = { version = \"1\", default-features = false, features = [\"serde\", \"std\"] }\nuuid = ",
                1,
            ),
        ));
    }
    if let Some(name) = domain {
        let path = root.join(format!("crates/domains/{name}/Cargo.toml"));
        let current = std::fs::read_to_string(&path)?;
        if !current.contains("rust_decimal") {
            let with = current.replacen(
                "keel-kernel.workspace = true\n",
                "keel-kernel.workspace = true\nrust_decimal.workspace = true\n",
                1,
            );
            ensure!(
                with != current,
                "add `rust_decimal.workspace = true` to {} by hand",
                path.display()
            );
            changes.push(Change::Create(path, with));
        }
    }
    for crate_manifest in ["crates/api/Cargo.toml", "crates/infrastructure/Cargo.toml"] {
        let current = std::fs::read_to_string(root.join(crate_manifest))?;
        if !current.contains("rust_decimal") {
            changes.push(Change::Insert {
                file: root.join(crate_manifest),
                marker: "# keel:new-domain:deps",
                text: "rust_decimal.workspace = true".to_owned(),
            });
        }
    }
    Ok(changes)
}

/// Every file's new content: creations as given, insertions applied to the current text (or
/// to a creation that replaces it).
fn apply_in_memory(root: &Path, changes: &[Change]) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for change in changes {
        if let Change::Create(path, content) = change {
            files.push((path.clone(), content.clone()));
        }
    }
    for change in changes {
        let Change::Insert { file, marker, text } = change else {
            continue;
        };
        let index = match files.iter().position(|(path, _)| path == file) {
            Some(index) => index,
            None => {
                let current = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", relative(root, file)))?;
                files.push((file.clone(), current));
                files.len() - 1
            }
        };
        let content = &mut files[index].1;
        // The whole line: `…:app-data` must not match `…:app-data-let`.
        let Some(at) = content.find(&format!("{marker}\n")) else {
            bail!(
                "marker `{marker}` is missing from {}: new-domain registers code there (restore it)",
                relative(root, file)
            );
        };
        let line_start = content[..at].rfind('\n').map_or(0, |i| i + 1);
        let indent = content[line_start..at].to_owned();
        ensure!(
            indent.trim().is_empty(),
            "marker `{marker}` in {} must be alone on its line",
            relative(root, file)
        );
        let block: String = text
            .lines()
            .map(|line| format!("{indent}{line}\n"))
            .collect();
        content.insert_str(line_start, &block);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    /// `projects` is generated from its spec like any team's domain: its generated files must
    /// be exactly what the spec and the templates make now (run
    /// `cargo xtask new-domain --regenerate projects` after changing either).
    #[test]
    fn projects_is_exactly_what_its_spec_generates() {
        let stale = stale_files(&workspace(), "projects").unwrap();
        assert!(
            stale.is_empty(),
            "these generated files differ from crates/domains/projects/domain.toml + xtask/templates: {stale:?}; run `cargo xtask new-domain --regenerate projects`"
        );
    }

    /// A scratch workspace holding one domain spec.
    fn scratch(dir: &str, spec: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("keel-regen-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("crates/domains/foos/src")).unwrap();
        std::fs::write(root.join("crates/domains/foos/domain.toml"), spec).unwrap();
        root
    }

    const FOOS: &str = "name = \"foos\"\n\n[[field]]\nname = \"label\"\ntype = \"string\"\n";

    #[test]
    fn regeneration_refuses_foreign_specs_odd_names_and_hand_written_files() {
        let root = scratch("names", &FOOS.replace("\"foos\"", "\"bars\""));
        let err = regenerate(&root, "foos").unwrap_err().to_string();
        assert!(err.contains("names `bars`"), "{err}");
        assert!(regenerate(&root, "../foos").is_err());
        assert!(regenerate(&root, "").is_err());
        let jobs = scratch("reserved", &FOOS.replace("\"foos\"", "\"jobs\""));
        std::fs::rename(
            jobs.join("crates/domains/foos"),
            jobs.join("crates/domains/jobs"),
        )
        .unwrap();
        let err = regenerate(&jobs, "jobs").unwrap_err().to_string();
        assert!(err.contains("taken by Keel"), "{err}");

        let root = scratch("hand", FOOS);
        let model = root.join("crates/domains/foos/src/model.rs");
        std::fs::write(&model, "// my own model\n").unwrap();
        let err = regenerate(&root, "foos").unwrap_err().to_string();
        assert!(err.contains("no `@generated` header"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&model).unwrap(),
            "// my own model\n"
        );
        assert!(
            !root.join("crates/domains/foos/src/policy.rs").exists(),
            "nothing is written when one file is refused"
        );

        std::fs::remove_file(&model).unwrap();
        regenerate(&root, "foos").unwrap();
        assert!(
            std::fs::read_to_string(&model)
                .unwrap()
                .starts_with("// @generated")
        );
        assert!(stale_files(&root, "foos").unwrap().is_empty());
        assert!(
            !root.join("crates/domains/foos/src/rules.rs").exists(),
            "scaffolds are never written by regeneration"
        );
        for dir in ["names", "reserved", "hand"] {
            let _ = std::fs::remove_dir_all(
                std::env::temp_dir().join(format!("keel-regen-{dir}-{}", std::process::id())),
            );
        }
    }

    /// Every field type and modifier, rendered: a change to a template or to the per-type
    /// rules shows up here as a reviewed snapshot.
    #[test]
    fn every_field_type_renders_as_the_snapshots_show() {
        let raw: Vec<String> = [
            "label:string",
            "subtitle:string?",
            "body:text",
            "note:text?",
            "active:bool",
            "quantity:i32",
            "total:i64?",
            "ratio:f64",
            "price:decimal?",
            "external_id:uuid?",
            "due_on:date?",
            "starts_at:datetime",
            "extra:json?",
            "stage:enum(draft,review,live)",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let spec = Spec::parse("gadgets", None, &raw).unwrap();
        for file in render(&spec, "m20990101_000001_create_gadgets").unwrap() {
            let name = file.path.replace('/', "__");
            insta::assert_snapshot!(name, file.content);
        }
        insta::assert_snapshot!("domain.toml", spec.to_file().unwrap());
    }
}
