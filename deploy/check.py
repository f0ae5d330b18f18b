#!/usr/bin/env python3
"""Semantic checks of Keel's deploy files, beyond what schemas see. Run by deploy/check.sh.

    check.py compose deploy/compose.yaml
    check.py otel deploy/observability/otel-collector.yaml deploy/compose.yaml
    check.py prometheus deploy/observability/prometheus.yml deploy/compose.yaml
    check.py grafana deploy/observability/grafana deploy/compose.yaml
    check.py k8s NAME RENDERED.yaml [--external-secret NAME]...
    check.py sync-rules [--check]     # components/monitoring/prometheusrule.yaml from alerts.yml

Needs Python 3.11+ and PyYAML. Prints one line per problem; exits 1 if there is any.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
DEFAULTS = REPO / "crates" / "config" / "src" / "defaults.toml"
ALERTS = DEPLOY / "observability" / "alerts.yml"
PROMETHEUS_RULE = DEPLOY / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"

# Keys deploy files set that the configuration does not know yet, with who adds them. Setting
# one of these makes startup fail until it lands: reported as a warning, not a problem.
PENDING_KEYS = {
    "server.drain_delay": "in the contract; being added to the configuration",
}
# Maps keyed by an id the operator chooses.
DYNAMIC_TABLES = ("auth.peppers.", "jobs.schedules.")
ALIASES = {"DATABASE_URL", "REDIS_URL", "RUST_LOG"}
PLAIN_VARS = {"APP_ENV", "APP_CONFIG_DIR"}
# Secret keys: never inline in a deploy file, always *_FILE.
SECRET_KEYS = {
    "auth.jwt_secret",
    "auth.jwt_private_key",
    "bootstrap.admin_password",
    "mail.smtp.password",
}
KEEL_ROLES = {"api", "worker", "migrations"}
# Variables compose.yaml may interpolate (everything else must be escaped as $$).
COMPOSE_VARIABLES = {"KEEL_PUBLIC_URL", "KEEL_OTLP_ENDPOINT"}


class Report:
    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.fail(message)
        return ok

    def finish(self) -> int:
        for warning in self.warnings:
            print(f"  warning: {self.scope}: {warning}")
        for problem in self.problems:
            print(f"  problem: {self.scope}: {problem}")
        return 1 if self.problems else 0


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_all(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def duration_seconds(value: str) -> float | None:
    """`30s`, `5m`, `1h 30m`, `45` (seconds)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)|\s", "", text):
        return None
    return sum(float(n) * units[u] for n, u in parts)


# ---------------------------------------------------------------- configuration keys


def known_config_keys() -> set[str]:
    """Every key of defaults.toml, including the documented commented-out ones."""
    keys: set[str] = set()

    def walk(prefix: str, table: dict) -> None:
        for name, value in table.items():
            key = f"{prefix}{name}"
            if isinstance(value, dict) and not key.startswith(DYNAMIC_TABLES):
                walk(f"{key}.", value)
            else:
                keys.add(key)

    text = DEFAULTS.read_text(encoding="utf-8")
    walk("", tomllib.loads(text))
    section = ""
    for line in text.splitlines():
        header = re.match(r"^\[([a-z0-9_.]+)\]\s*(#.*)?$", line)
        if header:
            section = header.group(1)
            continue
        commented = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if commented and section:
            keys.add(f"{section}.{commented.group(1)}")
    return keys


def config_key(var: str) -> str | None:
    """`APP__AUTH__PEPPERS__P1_FILE` -> `auth.peppers.p1`."""
    if not var.startswith("APP__"):
        return None
    base = var[: -len("_FILE")] if var.endswith("_FILE") else var
    segments = base[len("APP__") :].split("__")
    if any(not s for s in segments):
        return ""
    return ".".join(s.lower() for s in segments)


def check_env(report: Report, where: str, env: dict[str, Any], known: set[str]) -> None:
    for var, value in env.items():
        if var in PLAIN_VARS or var in ALIASES or var.startswith("OTEL_"):
            if var in {"DATABASE_URL", "REDIS_URL"} and re.search(r"://[^/@]*:[^/@]+@", str(value)):
                report.fail(f"{where}: {var} carries a password inline; use APP__…_FILE")
            continue
        key = config_key(var)
        if key is None:
            if var.startswith("APP_"):
                report.fail(f"{where}: {var} is not APP__SECTION__KEY (double underscores)")
            continue
        if not key:
            report.fail(f"{where}: {var} has an empty section or key")
            continue
        dynamic = key.startswith(DYNAMIC_TABLES) and key.count(".") >= 2
        if key in PENDING_KEYS and key not in known:
            report.warn(f"{where}: {var} sets {key}, not in defaults.toml yet ({PENDING_KEYS[key]})")
        elif key not in known and not dynamic:
            report.fail(f"{where}: {var} sets {key}, which crates/config/src/defaults.toml does not know")
        secret = key in SECRET_KEYS or key.startswith("auth.peppers.")
        if secret and not var.endswith("_FILE"):
            report.fail(f"{where}: {var} puts a secret inline; use {var}_FILE")
        if key == "database.url" and not var.endswith("_FILE") and "@" in str(value):
            report.fail(f"{where}: {var} may carry a password; use {var}_FILE")
    production = str(env.get("APP_ENV", "production")) == "production"
    if production:
        url = str(env.get("APP__APP__PUBLIC_URL", "https://"))
        report.check(url.startswith("https://"), f"{where}: app.public_url must be https:// in production")
        report.check(
            str(env.get("APP__RATE_LIMIT__ENABLED", "true")).lower() == "true",
            f"{where}: production refuses rate_limit.enabled = false",
        )
        origins = str(env.get("APP__SERVER__CORS__ALLOWED_ORIGINS", ""))
        report.check("*" not in origins.split(","), f"{where}: production refuses * in CORS origins")


def configured_durations(env: dict[str, Any], defaults: dict) -> dict[str, float]:
    out = {}
    for key, var in [
        ("drain", "APP__SERVER__DRAIN_DELAY"),
        ("shutdown", "APP__SERVER__SHUTDOWN_TIMEOUT"),
        ("worker_shutdown", "APP__WORKER__SHUTDOWN_TIMEOUT"),
    ]:
        fallback = {
            "drain": "5s" if env.get("APP_ENV", "production") == "production" else "0s",
            "shutdown": defaults["server"]["shutdown_timeout"],
            "worker_shutdown": defaults["worker"]["shutdown_timeout"],
        }[key]
        out[key] = duration_seconds(str(env.get(var, fallback))) or 0.0
    return out


def defaults_table() -> dict:
    return tomllib.loads(DEFAULTS.read_text(encoding="utf-8"))


def dockerfile_targets() -> set[str]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE))


# ---------------------------------------------------------------- compose


def interpolate_default(value: str) -> str:
    """`${VAR:-default}` -> `default`, as compose would without VAR; `$$` -> `$`."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
    return value.replace("$$", "$")


def compose_variables(text: str) -> set[str]:
    found = set()
    i = 0
    while i < len(text):
        if text[i] != "$":
            i += 1
            continue
        if text.startswith("$$", i):
            i += 2
            continue
        match = re.match(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text[i:])
        found.add(match.group(1) if match else text[i : i + 2])
        i += 1
    return found


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate_default(str(v)) for k, v in env.items()}


def healthcheck_port(service: dict) -> int | None:
    test = (service.get("healthcheck") or {}).get("test") or []
    text = " ".join(test) if isinstance(test, list) else str(test)
    match = re.search(r"/dev/tcp/127\.0\.0\.1/(\d+)", text)
    return int(match.group(1)) if match else None


def check_compose(path: Path) -> int:
    report = Report(str(path.relative_to(REPO)))
    text = path.read_text(encoding="utf-8")
    code = "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    for var in sorted(compose_variables(code) - COMPOSE_VARIABLES):
        report.fail(f"${var} is interpolated by compose; escape it as $${var} or add it to COMPOSE_VARIABLES")

    doc = load_yaml(path)
    services: dict[str, dict] = doc.get("services") or {}
    networks = set((doc.get("networks") or {}).keys())
    volumes = set((doc.get("volumes") or {}).keys())
    known = known_config_keys()
    defaults = defaults_table()
    targets = dockerfile_targets()

    for name, service in services.items():
        where = f"service {name}"
        for dep, spec in (service.get("depends_on") or {}).items() if isinstance(
            service.get("depends_on"), dict
        ) else ((d, {}) for d in service.get("depends_on") or []):
            if not report.check(dep in services, f"{where}: depends_on unknown service {dep}"):
                continue
            if "observability" in (services[dep].get("profiles") or []) and not service.get("profiles"):
                report.fail(f"{where}: depends on {dep}, which only exists in a profile")
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy":
                report.check("healthcheck" in services[dep], f"{where}: waits for {dep} to be healthy, which has no healthcheck")
        service_networks = service.get("networks") or []
        for net in service_networks if isinstance(service_networks, list) else service_networks.keys():
            report.check(net in networks, f"{where}: network {net} is not declared")
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/")):
                report.check((path.parent / source).exists(), f"{where}: bind mount source {source} does not exist")
            else:
                report.check(source in volumes, f"{where}: volume {source} is not declared")
        for port in service.get("ports") or []:
            spec = str(port) if not isinstance(port, dict) else f"{port.get('host_ip', '')}:{port.get('published', '')}:{port.get('target')}"
            report.check(spec.startswith("127.0.0.1:"), f"{where}: port {spec} is published beyond loopback")
            if spec.split(":")[-1].split("/")[0] in {"8081", "8082"}:
                report.fail(f"{where}: publishes {spec}; the ops and worker ports stay internal")

        build = service.get("build")
        role = build.get("target") if isinstance(build, dict) else None
        if role is None:
            continue
        report.check(role in targets, f"{where}: build target {role} is not in deploy/Dockerfile")
        report.check(build.get("dockerfile") == "deploy/Dockerfile", f"{where}: builds from {build.get('dockerfile')}")
        report.check((path.parent / build.get("context", ".")).resolve() == REPO, f"{where}: build context must be the repository root")
        env = compose_env(service)
        check_env(report, where, env, known)
        report.check(service.get("read_only") is True, f"{where}: read_only root filesystem expected")
        report.check("ALL" in (service.get("cap_drop") or []), f"{where}: cap_drop ALL expected")
        report.check("APP__DATABASE__URL_FILE" in env, f"{where}: APP__DATABASE__URL_FILE missing")
        if role == "migrations":
            report.check(service.get("restart") in (None, "no"), f"{where}: a one-shot job must not restart")
            continue
        for key in ("APP__AUTH__JWT_SECRET_FILE", "APP__AUTH__ACTIVE_PEPPER"):
            report.check(key in env, f"{where}: {key} missing (production refuses to start)")
        deps = service.get("depends_on") or {}
        report.check(
            isinstance(deps, dict) and (deps.get("migrations") or {}).get("condition") == "service_completed_successfully",
            f"{where}: must wait for migrations (condition: service_completed_successfully)",
        )
        expected_port = defaults["ops"]["port"] if role == "api" else defaults["worker"]["port"]
        report.check(healthcheck_port(service) == expected_port, f"{where}: healthcheck must probe 127.0.0.1:{expected_port}")
        if role == "worker":
            report.check(
                env.get("APP__WORKER__HOST", "0.0.0.0") == "0.0.0.0",
                f"{where}: worker.host must be 0.0.0.0 for scrapes and probes",
            )
        durations = configured_durations(env, defaults)
        grace = duration_seconds(str(service.get("stop_grace_period", "10s"))) or 0
        needed = durations["drain"] + durations["shutdown"] if role == "api" else durations["worker_shutdown"]
        report.check(grace > needed, f"{where}: stop_grace_period {grace:.0f}s must exceed {needed:.0f}s")
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint:
            host = re.sub(r"^https?://", "", endpoint).split(":")[0]
            report.check(host in services, f"{where}: OTEL_EXPORTER_OTLP_ENDPOINT names unknown service {host}")
        report.check(bool(env.get("OTEL_SERVICE_NAME")), f"{where}: OTEL_SERVICE_NAME missing")
    for required in ("postgres", "redis", "mailpit", "migrations", "api", "worker"):
        report.check(required in services, f"service {required} missing")
    return report.finish()


# ---------------------------------------------------------------- observability


def check_otel(path: Path, compose_path: Path) -> int:
    report = Report(str(path.relative_to(REPO)))
    doc = load_yaml(path) or {}
    services = (load_yaml(compose_path) or {}).get("services") or {}
    pipelines = (doc.get("service") or {}).get("pipelines") or {}
    report.check("traces" in pipelines, "no traces pipeline")
    for component in ("receivers", "processors", "exporters", "extensions"):
        defined = set((doc.get(component) or {}).keys())
        used: set[str] = set()
        if component == "extensions":
            used = set((doc.get("service") or {}).get("extensions") or [])
        else:
            for name, pipeline in pipelines.items():
                report.check(bool(pipeline.get(component)) or component == "processors", f"pipeline {name}: no {component}")
                used |= set(pipeline.get(component) or [])
        for name in sorted(used - defined):
            report.fail(f"{component[:-1]} {name} is used but not defined")
        for name in sorted(defined - used):
            report.warn(f"{component[:-1]} {name} is defined but unused")
    protocols = ((doc.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    report.check(((protocols.get("grpc") or {}).get("endpoint")) == "0.0.0.0:4317", "otlp grpc must listen on 0.0.0.0:4317")
    report.check(((protocols.get("http") or {}).get("endpoint")) == "0.0.0.0:4318", "otlp http must listen on 0.0.0.0:4318")
    for name, exporter in (doc.get("exporters") or {}).items():
        endpoint = str((exporter or {}).get("endpoint", ""))
        host = re.sub(r"^https?://", "", endpoint).split(":")[0]
        if host:
            report.check(host in services, f"exporter {name}: {host} is not a compose service")
    report.check("otel-collector" in services, "compose has no otel-collector service")
    return report.finish()


def check_prometheus(path: Path, compose_path: Path) -> int:
    report = Report(str(path.relative_to(REPO)))
    doc = load_yaml(path) or {}
    defaults = defaults_table()
    services = (load_yaml(compose_path) or {}).get("services") or {}
    jobs = {job["job_name"]: job for job in doc.get("scrape_configs") or []}
    for job, service, port in [
        ("keel-api", "api", defaults["ops"]["port"]),
        ("keel-worker", "worker", defaults["worker"]["port"]),
    ]:
        if not report.check(job in jobs, f"scrape job {job} missing (alerts.yml expects it)"):
            continue
        targets = [
            f"{name}:{sd.get('port')}" for sd in jobs[job].get("dns_sd_configs") or [] for name in sd.get("names") or []
        ] + [t for sc in jobs[job].get("static_configs") or [] for t in sc.get("targets") or []]
        report.check(targets == [f"{service}:{port}"], f"{job} must scrape {service}:{port}, not {targets}")
        report.check(service in services, f"{job}: compose has no service {service}")
    report.check("alerts.yml" in (doc.get("rule_files") or []), "rule_files must load alerts.yml")
    mounts = [str(m) for m in (services.get("prometheus") or {}).get("volumes") or []]
    report.check(any(m.startswith("./observability/alerts.yml:") for m in mounts), "compose must mount alerts.yml beside prometheus.yml")
    return report.finish()


def check_grafana(directory: Path, compose_path: Path) -> int:
    report = Report(str(directory.relative_to(REPO)))
    services = (load_yaml(compose_path) or {}).get("services") or {}
    mounts = dict(
        m.split(":")[:2] for m in (services.get("grafana") or {}).get("volumes") or [] if isinstance(m, str)
    )
    uids: set[str] = set()
    for file in sorted((directory / "provisioning" / "datasources").glob("*.y*ml")):
        doc = load_yaml(file) or {}
        report.check(doc.get("apiVersion") == 1, f"{file.name}: apiVersion must be 1")
        for ds in doc.get("datasources") or []:
            for field in ("name", "type", "uid", "url", "access"):
                report.check(bool(ds.get(field)), f"{file.name}: data source {ds.get('name')} has no {field}")
            host = re.sub(r"^https?://", "", str(ds.get("url", ""))).split(":")[0].split("/")[0]
            report.check(host in services, f"{file.name}: {ds.get('name')} points at {host}, not a compose service")
            uids.add(str(ds.get("uid")))
    report.check(len(uids) > 0, "no data sources provisioned")
    for file in sorted((directory / "provisioning" / "dashboards").glob("*.y*ml")):
        doc = load_yaml(file) or {}
        report.check(doc.get("apiVersion") == 1, f"{file.name}: apiVersion must be 1")
        for provider in doc.get("providers") or []:
            target = (provider.get("options") or {}).get("path")
            source = next((s for s, t in mounts.items() if t == target), None)
            report.check(source == "./observability/grafana/dashboards", f"{file.name}: path {target} is not where compose mounts the dashboards")
    dashboards = sorted((directory / "dashboards").glob("*.json"))
    if not dashboards:
        report.warn("no dashboards in grafana/dashboards/ yet")
    for file in dashboards:
        try:
            text = file.read_text(encoding="utf-8")
            json.loads(text)
        except (OSError, ValueError) as error:
            report.fail(f"{file.name}: not JSON ({error})")
            continue
        for uid in set(re.findall(r'"datasource"\s*:\s*\{[^{}]*"uid"\s*:\s*"([^"$]+)"', text)):
            if uid not in {"-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --"}:
                report.check(uid in uids, f"{file.name}: data source uid {uid} is not provisioned")
    return report.finish()


# ---------------------------------------------------------------- kubernetes


def labels_match(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", selector) if selector else {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def pod_template(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return obj["spec"]["template"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return None


def check_k8s(name: str, rendered: Path, external_secrets: set[str]) -> int:
    report = Report(f"k8s {name}")
    docs = load_all(rendered)
    known = known_config_keys()
    defaults = defaults_table()
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    workloads = {n: o for o in docs if pod_template(o) for n in [o["metadata"]["name"]]}
    configmaps = by_kind.get("ConfigMap", {})
    secrets = set(by_kind.get("Secret", {})) | external_secrets

    keel_env: dict[str, str] = {}
    for cm_name, cm in configmaps.items():
        if cm_name.startswith("keel-config"):
            keel_env = {k: str(v) for k, v in (cm.get("data") or {}).items()}
            check_env(report, f"configmap {cm_name}", keel_env, known)
    report.check(bool(keel_env), "no keel-config ConfigMap")
    durations = configured_durations(keel_env, defaults)

    for wl_name, obj in workloads.items():
        where = f"{obj['kind']} {wl_name}"
        template = pod_template(obj)
        spec = template["spec"]
        labels = template["metadata"].get("labels") or {}
        keel = labels.get("app.kubernetes.io/name") == "keel"
        role = labels.get("app.kubernetes.io/component")
        pod_sc = spec.get("securityContext") or {}
        report.check(pod_sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot")
        report.check((pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: seccompProfile RuntimeDefault")
        report.check(spec.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken false")
        if keel:
            report.check(pod_sc.get("runAsUser") == 10001, f"{where}: runs as uid 10001 (the images' keel user)")
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for volume in volumes.values():
            if "secret" in volume:
                ref = volume["secret"]["secretName"]
                report.check(ref in secrets, f"{where}: secret {ref} is neither rendered nor declared external")
                mode = volume["secret"].get("defaultMode", 0o644)
                report.check(mode & 0o040 or pod_sc.get("runAsUser") == 0, f"{where}: secret {ref} mode {oct(mode)} unreadable by the fsGroup")
            if "configMap" in volume:
                report.check(volume["configMap"]["name"] in configmaps, f"{where}: configmap {volume['configMap']['name']} missing")
        for container in spec.get("containers") or []:
            cw = f"{where}/{container['name']}"
            sc = container.get("securityContext") or {}
            report.check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem")
            report.check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation false")
            report.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{cw}: drop ALL capabilities")
            resources = container.get("resources") or {}
            for level in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    report.check(resource in (resources.get(level) or {}), f"{cw}: resources.{level}.{resource}")
            image = container.get("image", "")
            if name != "base":
                report.check(":" in image.rsplit("/", 1)[-1] or "@" in image, f"{cw}: image {image} has no tag")
            if name == "production":
                report.check(not image.endswith(":latest"), f"{cw}: production must pin a tag, not {image}")
            for source in container.get("envFrom") or []:
                if "configMapRef" in source:
                    report.check(source["configMapRef"]["name"] in configmaps, f"{cw}: configmap {source['configMapRef']['name']} missing")
                if "secretRef" in source:
                    report.check(source["secretRef"]["name"] in secrets, f"{cw}: secret {source['secretRef']['name']} missing")
            env = {e["name"]: e.get("value", "") for e in container.get("env") or []}
            if keel:
                check_env(report, cw, env, known)
                for var, value in env.items():
                    if var.endswith("_FILE"):
                        report.check(str(value).startswith("/run/secrets/keel/"), f"{cw}: {var} points outside the secret mount")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
            if keel:
                for path in ("/app/data", "/tmp"):
                    report.check("emptyDir" in volumes.get(mounts.get(path, ""), {}), f"{cw}: {path} must be an emptyDir")
                report.check("/run/secrets/keel" in mounts, f"{cw}: secrets mounted at /run/secrets/keel")
                uses_config = any("configMapRef" in e for e in container.get("envFrom") or [])
                for var, value in keel_env.items() if uses_config else ():
                    if var.endswith("_FILE"):
                        report.check(value.startswith("/run/secrets/keel/"), f"{cw}: {var} points outside the secret mount")
            if keel and "/run/secrets/keel" in mounts:
                volume = volumes.get(mounts["/run/secrets/keel"], {}).get("secret") or {}
                rendered_secret = by_kind.get("Secret", {}).get(volume.get("secretName", ""))
                uses_config = any("configMapRef" in e for e in container.get("envFrom") or [])
                wanted = {
                    str(v).removeprefix("/run/secrets/keel/")
                    for k, v in list(env.items()) + (list(keel_env.items()) if uses_config else [])
                    if k.endswith("_FILE")
                }
                if volume.get("items"):
                    available = {item["path"] for item in volume["items"]}
                elif rendered_secret is not None:
                    available = set((rendered_secret.get("data") or {}) | (rendered_secret.get("stringData") or {}))
                else:
                    available = wanted  # an external Secret: its keys are documented, not rendered
                for file in sorted(wanted - available):
                    report.fail(f"{cw}: reads /run/secrets/keel/{file}, which the secret volume does not provide")
            probes = {p: container.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")}
            for probe_name, probe in probes.items():
                if probe and "httpGet" in probe:
                    port = probe["httpGet"]["port"]
                    number = ports.get(port) if isinstance(port, str) else port
                    report.check(number in ports.values(), f"{cw}: {probe_name} port {port} is not a container port")
                    if keel and role == "api":
                        report.check(number in (8080, defaults["ops"]["port"]), f"{cw}: {probe_name} on {number}")
                    if keel and role == "worker":
                        report.check(number == defaults["worker"]["port"], f"{cw}: {probe_name} on {number}")
            if obj["kind"] in {"Deployment", "StatefulSet"}:
                report.check(bool(probes["livenessProbe"] and probes["readinessProbe"]), f"{cw}: liveness and readiness probes")
            if keel and role == "api":
                report.check(ports.get("http") == defaults["server"]["port"] and ports.get("ops") == defaults["ops"]["port"], f"{cw}: ports http 8080 and ops 8082")
            if keel and role == "worker":
                report.check(ports.get("ops") == defaults["worker"]["port"], f"{cw}: port ops 8081")
            if keel and role == "migrations":
                report.check(container.get("args") == ["migrate", "up"], f"{cw}: runs `migrate up`")
        if keel and obj["kind"] == "Deployment":
            grace = spec.get("terminationGracePeriodSeconds", 30)
            needed = durations["drain"] + durations["shutdown"] if role == "api" else durations["worker_shutdown"]
            report.check(grace > needed, f"{where}: terminationGracePeriodSeconds {grace} must exceed {needed:.0f}")
            spread = spec.get("topologySpreadConstraints") or []
            report.check(
                any(c.get("topologyKey") == "kubernetes.io/hostname" and labels_match(c.get("labelSelector") or {}, labels) for c in spread),
                f"{where}: topologySpreadConstraints across nodes",
            )
        if obj["kind"] == "Job":
            report.check(spec.get("restartPolicy") in {"Never", "OnFailure"}, f"{where}: restartPolicy")

    pod_labels = {n: pod_template(o)["metadata"].get("labels") or {} for n, o in workloads.items()}
    services = by_kind.get("Service", {})
    for svc_name, svc in services.items():
        selected = [n for n, lab in pod_labels.items() if labels_match(svc["spec"].get("selector") or {}, lab)]
        if not report.check(bool(selected), f"Service {svc_name}: selects no workload"):
            continue
        container_ports = {
            (p.get("name"), p["containerPort"])
            for n in selected
            for c in pod_template(workloads[n])["spec"]["containers"]
            for p in c.get("ports") or []
        }
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            ok = any(target in pair for pair in container_ports)
            report.check(ok, f"Service {svc_name}: targetPort {target} matches no container port")
    for required, ports in [("keel-api", {("http", 8080), ("ops", 8082)}), ("keel-worker", {("ops", 8081)})]:
        svc = services.get(required)
        if report.check(svc is not None, f"Service {required} missing (also the Prometheus job name)"):
            have = {(p.get("name"), p["port"]) for p in svc["spec"]["ports"]}
            report.check(ports <= have, f"Service {required}: ports {sorted(ports)} expected")

    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    for hpa_name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_kind.get(ref["kind"], {}).get(ref["name"])
        if report.check(target is not None, f"HPA {hpa_name}: target {ref['kind']} {ref['name']} missing"):
            report.check("replicas" not in target["spec"], f"{ref['kind']} {ref['name']}: drop spec.replicas, the HPA owns it")
        report.check(hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], f"HPA {hpa_name}: minReplicas > maxReplicas")
    for deployment in ("keel-api", "keel-worker"):
        report.check(any(h["spec"]["scaleTargetRef"]["name"] == deployment for h in hpas.values()), f"no HPA for {deployment}")
    for pdb_name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        report.check(any(labels_match(pdb["spec"]["selector"], lab) for lab in pod_labels.values()), f"PDB {pdb_name}: selects no workload")

    policies = by_kind.get("NetworkPolicy", {})
    for pol_name, pol in policies.items():
        selected = [n for n, lab in pod_labels.items() if labels_match(pol["spec"]["podSelector"], lab)]
        report.check(bool(selected), f"NetworkPolicy {pol_name}: selects no workload")
        for rule in pol["spec"].get("ingress") or []:
            for port in rule.get("ports") or []:
                if port.get("port") in (8081, 8082):
                    report.check(bool(rule.get("from")), f"NetworkPolicy {pol_name}: port {port['port']} open to everyone")
    for component in ("api", "worker"):
        report.check(
            any(pol["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == component for pol in policies.values()),
            f"no NetworkPolicy for the {component}",
        )

    for ing_name, ing in by_kind.get("Ingress", {}).items():
        for rule in ing["spec"].get("rules") or []:
            for p in (rule.get("http") or {}).get("paths") or []:
                backend = p["backend"]["service"]
                svc = services.get(backend["name"])
                if report.check(svc is not None, f"Ingress {ing_name}: service {backend['name']} missing"):
                    port = backend["port"].get("name") or backend["port"].get("number")
                    match = [q for q in svc["spec"]["ports"] if port in (q.get("name"), q["port"])]
                    report.check(bool(match), f"Ingress {ing_name}: port {port} not on {backend['name']}")
                    report.check(not any(q["port"] in (8081, 8082) for q in match), f"Ingress {ing_name}: exposes an ops port")

    for sm_name, sm in by_kind.get("ServiceMonitor", {}).items():
        selected = [s for s in services.values() if labels_match(sm["spec"]["selector"], s["metadata"].get("labels") or {})]
        if report.check(len(selected) == 1, f"ServiceMonitor {sm_name}: selects {len(selected)} Services, expected 1"):
            names = {p.get("name") for p in selected[0]["spec"]["ports"]}
            for endpoint in sm["spec"].get("endpoints") or []:
                report.check(endpoint.get("port") in names, f"ServiceMonitor {sm_name}: port {endpoint.get('port')} not on the Service")
                report.check(endpoint.get("port") == "ops", f"ServiceMonitor {sm_name}: scrape the ops port")
    for rule_name, rule in by_kind.get("PrometheusRule", {}).items():
        if ALERTS.exists():
            report.check(
                rule["spec"].get("groups") == (load_yaml(ALERTS) or {}).get("groups"),
                f"PrometheusRule {rule_name} differs from deploy/observability/alerts.yml: run `python3 deploy/check.py sync-rules`",
            )
    return report.finish()


# ---------------------------------------------------------------- alert rules for the operator


def _dumper() -> type[yaml.SafeDumper]:
    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            super().increase_indent(flow, False)  # indent lists under their key (yamllint)

    def literal(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, literal)
    return Dumper


def sync_rules(check_only: bool) -> int:
    report = Report(str(PROMETHEUS_RULE.relative_to(REPO)))
    if not ALERTS.exists():
        report.warn("deploy/observability/alerts.yml does not exist yet")
        return report.finish()
    groups = (load_yaml(ALERTS) or {}).get("groups")
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "keel",
            "labels": {"app.kubernetes.io/name": "keel"},
        },
        "spec": {"groups": groups},
    }
    header = (
        "# Generated from deploy/observability/alerts.yml by `python3 deploy/check.py sync-rules`;\n"
        "# edit alerts.yml and run that again (deploy/check.sh fails while they differ).\n"
        "# yamllint disable rule:line-length\n"
    )
    text = header + yaml.dump(rule, Dumper=_dumper(), sort_keys=False, width=100, allow_unicode=True)
    current = PROMETHEUS_RULE.read_text(encoding="utf-8") if PROMETHEUS_RULE.exists() else None
    if check_only:
        same = current is not None and (load_yaml(PROMETHEUS_RULE) or {}).get("spec", {}).get("groups") == groups
        report.check(same, "out of date with alerts.yml: run `python3 deploy/check.py sync-rules`")
        return report.finish()
    if current != text:
        PROMETHEUS_RULE.write_text(text, encoding="utf-8")
        print(f"wrote {PROMETHEUS_RULE.relative_to(REPO)}")
    return report.finish()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "compose" and len(args) == 1:
        return check_compose(Path(args[0]).resolve())
    if command == "otel" and len(args) == 2:
        return check_otel(Path(args[0]).resolve(), Path(args[1]).resolve())
    if command == "prometheus" and len(args) == 2:
        return check_prometheus(Path(args[0]).resolve(), Path(args[1]).resolve())
    if command == "grafana" and len(args) == 2:
        return check_grafana(Path(args[0]).resolve(), Path(args[1]).resolve())
    if command == "k8s" and len(args) >= 2:
        externals = {args[i + 1] for i in range(2, len(args) - 1) if args[i] == "--external-secret"}
        return check_k8s(args[0], Path(args[1]), externals)
    if command == "sync-rules":
        return sync_rules(check_only="--check" in args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
