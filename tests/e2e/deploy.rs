//! Static checks of the deploy files (no Docker engine runs in CI): the Dockerfile's targets,
//! user, ports and commands must agree with the binaries and the configuration they wrap.

use std::path::{Path, PathBuf};

use clap::Parser;
use keel_app::cli::{ApiCli, WorkerCli};
use keel_config::{Settings, Sources};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The instructions of one stage: (instruction, arguments), continuation lines joined.
fn stage(dockerfile: &str, name: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut in_stage = false;
    let mut instructions = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instruction, args) = line.split_once(' ').unwrap_or((line, ""));
        if instruction.eq_ignore_ascii_case("FROM") {
            in_stage = args.ends_with(&format!(" AS {name}"));
            if in_stage {
                instructions.push(("FROM".to_owned(), args.to_owned()));
            }
            continue;
        }
        if in_stage {
            instructions.push((instruction.to_ascii_uppercase(), args.trim().to_owned()));
        }
    }
    instructions
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|_| panic!("not exec form: {args}"))
}

fn value<'a>(stage: &'a [(String, String)], instruction: &str) -> Option<&'a str> {
    stage
        .iter()
        .rev()
        .find(|(i, _)| i == instruction)
        .map(|(_, a)| a.as_str())
}

#[test]
fn dockerfile_targets_run_the_right_binaries_as_non_root() {
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let runtime = stage(&dockerfile, "runtime");
    let user = value(&runtime, "USER").expect("the runtime stage sets USER");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "USER {user}"
    );
    assert!(
        runtime
            .iter()
            .any(|(i, a)| i == "ENV" && a.contains("APP_ENV=production"))
    );
    assert!(repo("config").is_dir(), "the runtime stage copies config/");

    let production = Settings::load_from(&Sources::from_vars([
        ("APP_ENV", "production"),
        (
            "APP__AUTH__JWT_SECRET",
            "Zx8Kq2Lw9Rt4Yp7Mn3Vb6Hc1Jd5Fg0Sa2Qe",
        ),
        (
            "APP__AUTH__PEPPERS__P1",
            "Qm4Lx8Rw2Tz6Yb1Nc5Vd9Hf3Jg7Ks0Pa4E",
        ),
        ("APP__AUTH__ACTIVE_PEPPER", "p1"),
        ("APP__APP__PUBLIC_URL", "https://app.example.com"),
        ("DATABASE_URL", "postgres://keel@db/keel"),
    ]))
    .unwrap();

    let api_ports = format!("{} {}", production.server.port, production.ops.port);
    let worker_port = production.worker.port.to_string();
    for (target, binary, ports) in [
        ("api", "api", Some(api_ports.as_str())),
        ("worker", "worker", Some(worker_port.as_str())),
        ("migrations", "api", None),
    ] {
        let stage = stage(&dockerfile, target);
        assert!(
            !stage.is_empty(),
            "no `{target}` target in deploy/Dockerfile"
        );
        assert!(
            stage[0].1.starts_with("runtime "),
            "{target} builds on the non-root runtime"
        );
        assert!(
            value(&stage, "USER").is_none(),
            "{target} must not switch users"
        );
        let entrypoint = exec_form(value(&stage, "ENTRYPOINT").unwrap());
        assert_eq!(entrypoint, [format!("/usr/local/bin/{binary}")]);
        assert!(
            stage.iter().any(|(i, a)| i == "COPY"
                && a.ends_with(&format!("/out/{binary} /usr/local/bin/{binary}"))),
            "{target} copies the {binary} binary"
        );
        let mut argv = vec![binary.to_owned()];
        argv.extend(exec_form(value(&stage, "CMD").unwrap()));
        let parsed = if binary == "api" {
            ApiCli::try_parse_from(&argv).map(drop)
        } else {
            WorkerCli::try_parse_from(&argv).map(drop)
        };
        assert!(
            parsed.is_ok(),
            "{target}: `{}` is not a valid command",
            argv.join(" ")
        );
        if let Some(ports) = ports {
            assert_eq!(value(&stage, "EXPOSE"), Some(ports), "{target}");
        }
    }
}

#[test]
fn dockerfile_builds_with_the_pinned_toolchain() {
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let toolchain = std::fs::read_to_string(repo("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={channel}")),
        "deploy/Dockerfile must build with rust-toolchain.toml's {channel}"
    );
    assert!(dockerfile.contains("--locked"));
}
