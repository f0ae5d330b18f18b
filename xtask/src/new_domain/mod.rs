//! `cargo xtask new-domain <name> <field>:<type>[?] ...`: writes a complete owner-scoped
//! resource in the shape of `projects` (domain crate, entity, migration, routes, OpenAPI,
//! permissions, factories, tests) and registers it at the `keel:new-domain:<slot>` markers.
//!
//! Everything is planned in memory and checked first (name free, every marker present), so a
//! refused run writes nothing.

pub(crate) mod check;
mod render;
mod spec;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use xshell::{Shell, cmd};

pub(crate) use spec::Spec;

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
            Change::Insert { file, .. } => Some(relative(root, file)),
            Change::Create(..) => None,
        })
        .collect();
    edited.sort();
    edited.dedup();
    eprintln!("registered in:\n  {}", edited.join("\n  "));

    cmd!(sh, "cargo fmt --all").run()?;
    if build {
        eprintln!("building and regenerating docs/openapi.json …");
        let document = cmd!(sh, "cargo run --quiet --bin api -- openapi").read()?;
        std::fs::write(root.join("docs/openapi.json"), document + "\n")?;
    }
    let kebab = spec.kebab();
    eprintln!(
        "\n`{name}` is ready: /api/v1/{kebab} (permission `{name}:write` for members, `{name}:manage_all` for admins).\nNext:\n  cargo test -p keel-{kebab}                 # domain unit tests\n  cargo test -p keel-e2e {name}              # over HTTP\n  cargo run --bin api                        # migrates and serves it\nThen add your rules: docs/adding-a-domain.md",
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

/// Refuses a name another part of Keel already uses.
fn ensure_free(root: &Path, spec: &Spec) -> anyhow::Result<()> {
    let name = &spec.name;
    let kebab = spec.kebab();
    for path in [
        format!("crates/domains/{name}"),
        format!("crates/api/src/domains/{name}.rs"),
        format!("crates/infrastructure/src/{name}.rs"),
        format!("tests/e2e/{name}.rs"),
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
    for entry in std::fs::read_dir(root.join("migration/src"))? {
        let file = entry?.file_name().to_string_lossy().into_owned();
        ensure!(
            !file.ends_with(&suffix),
            "a migration already creates `{name}` (migration/src/{file})"
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

/// `mYYYYMMDD_HHMMSS_create_<name>`, after every existing migration (they run in list order,
/// and names should sort the same way).
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
    for entry in std::fs::read_dir(root.join("migration/src"))? {
        let file = entry?.file_name().to_string_lossy().into_owned();
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
    let plural = spec.pascal_plural();
    let module = migration_module(root, name)?;
    let domain = root.join("crates/domains").join(name);
    let dep = format!("keel-{kebab}.workspace = true");
    let mut changes = vec![
        Change::Create(domain.join("Cargo.toml"), render::domain_manifest(spec)),
        Change::Create(domain.join("src/lib.rs"), render::domain_lib(spec)),
        Change::Create(domain.join("src/model.rs"), render::domain_model(spec)),
        Change::Create(domain.join("src/policy.rs"), render::domain_policy(spec)),
        Change::Create(domain.join("src/service.rs"), render::domain_service(spec)),
        Change::Create(domain.join("src/testing.rs"), render::domain_testing(spec)),
        Change::Create(
            root.join(format!("crates/infrastructure/src/{name}.rs")),
            render::infrastructure(spec),
        ),
        Change::Create(
            root.join(format!("migration/src/{module}.rs")),
            render::migration(spec),
        ),
        Change::Create(
            root.join(format!("crates/api/src/domains/{name}.rs")),
            render::api(spec),
        ),
        Change::Create(root.join(format!("tests/e2e/{name}.rs")), render::e2e(spec)),
    ];
    let mut insert = |file: &str, marker: &'static str, text: String| {
        changes.push(Change::Insert {
            file: root.join(file),
            marker,
            text,
        });
    };
    insert(
        "Cargo.toml",
        "# keel:new-domain:crates",
        format!("keel-{kebab} = {{ path = \"crates/domains/{name}\" }}"),
    );
    for manifest in [
        "crates/infrastructure/Cargo.toml",
        "crates/api/Cargo.toml",
        "crates/app/Cargo.toml",
    ] {
        insert(manifest, "# keel:new-domain:deps", dep.clone());
    }
    insert(
        "tests/Cargo.toml",
        "# keel:new-domain:deps",
        format!("keel-{kebab} = {{ workspace = true, features = [\"testing\"] }}"),
    );
    insert(
        "crates/infrastructure/src/lib.rs",
        "// keel:new-domain:modules",
        format!("pub mod {name};"),
    );
    insert(
        "migration/src/lib.rs",
        "// keel:new-domain:migration-modules",
        format!("mod {module};"),
    );
    insert(
        "migration/src/lib.rs",
        "// keel:new-domain:migrations",
        format!("Box::new({module}::Migration),"),
    );
    insert(
        "crates/api/src/domains/mod.rs",
        "// keel:new-domain:modules",
        format!("pub mod {name};"),
    );
    insert(
        "crates/api/src/domains/mod.rs",
        "// keel:new-domain:configure",
        format!("{name}::configure(cfg);"),
    );
    insert(
        "crates/api/src/domains/mod.rs",
        "// keel:new-domain:openapi",
        format!("document.merge({name}::openapi());"),
    );
    insert(
        "crates/api/src/server.rs",
        "// keel:new-domain:api-services",
        format!("/// {plural}.\npub {name}: keel_{name}::{plural},"),
    );
    insert(
        "crates/api/src/server.rs",
        "// keel:new-domain:app-data-let",
        format!("let {name} = web::Data::new(services.{name});"),
    );
    insert(
        "crates/api/src/server.rs",
        "// keel:new-domain:app-data",
        format!(".app_data({name}.clone())"),
    );
    insert(
        "crates/app/src/api.rs",
        "// keel:new-domain:api-services-from",
        format!("{name}: services.{name},"),
    );
    insert(
        "crates/app/src/services.rs",
        "// keel:new-domain:permissions",
        format!(".chain(keel_{name}::PERMISSIONS)"),
    );
    insert(
        "crates/app/src/services.rs",
        "// keel:new-domain:services",
        format!("/// {plural}.\npub {name}: keel_{name}::{plural},"),
    );
    insert(
        "crates/app/src/services.rs",
        "// keel:new-domain:services-build",
        format!(
            "{name}: keel_{name}::{plural}::new(\n    Arc::new(SeaCrud::new(db.clone())),\n    unit_of_work.clone(),\n    activity_store.clone(),\n    clock.clone(),\n),"
        ),
    );
    insert(
        "tests/e2e/main.rs",
        "// keel:new-domain:modules",
        format!("mod {name};"),
    );
    if spec.uses_decimal() {
        changes.extend(decimal_support(root)?);
    }
    Ok(changes)
}

/// The `rust_decimal` dependency and sea-orm's decimal support, once.
fn decimal_support(root: &Path) -> anyhow::Result<Vec<Change>> {
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

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
