#!/usr/bin/env bash
# Static checks of Keel's deploy files; needs no Docker engine and no cluster.
#
#   deploy/check.sh        exit 0: all valid · 1: a problem (listed) · 3: a tool is missing
#
# What it checks:
#   compose.yaml              compose-spec JSON schema (shipped by check-jsonschema) + deploy/check.py
#                             (references, build targets, config keys against defaults.toml,
#                             probes, grace periods, loopback-only ports, $ escaping);
#                             `docker compose config` too when the compose plugin is installed
#   observability/            promtool (prometheus.yml and the alerts.yml it loads), the
#                             collector's pipelines, Grafana provisioning and dashboards
#   k8s/base, k8s/overlays/*  rendered with kustomize, validated against the Kubernetes API
#                             schemas (kubernetes-validate --strict, 1.30 and latest) + deploy/check.py
#   shell and YAML style      shellcheck, yamllint
#
# Tools (Debian bookworm + PyPI):
#   apt-get install -y prometheus shellcheck python3 python3-yaml     # promtool, shellcheck
#   pip install check-jsonschema kubernetes-validate yamllint
#   kubectl (its built-in kustomize, v4+) or a kustomize binary on PATH
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"

# Oldest Kubernetes the manifests are checked against, besides kubernetes-validate's newest.
MIN_KUBERNETES=1.30.0

# ---------------------------------------------------------------- tools
missing=()
need() {
  command -v "$1" >/dev/null 2>&1 || missing+=("$1: $2")
}
need python3 "apt-get install -y python3 python3-yaml"
need check-jsonschema "pip install check-jsonschema"
need kubernetes-validate "pip install kubernetes-validate"
need yamllint "pip install yamllint"
need promtool "apt-get install -y prometheus"
need shellcheck "apt-get install -y shellcheck"
if command -v python3 >/dev/null 2>&1 &&
  ! python3 -c 'import sys, tomllib, yaml; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  missing+=("python3 >= 3.11 with PyYAML: apt-get install -y python3-yaml (or pip install pyyaml)")
fi
kustomize_cmd=()
if command -v kustomize >/dev/null 2>&1; then
  kustomize_cmd=(kustomize build)
elif command -v kubectl >/dev/null 2>&1 &&
  kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'; then
  kustomize_cmd=(kubectl kustomize)
else
  missing+=("kustomize: kubectl >= 1.21 (built-in kustomize) or a kustomize binary")
fi
if ((${#missing[@]})); then
  echo "deploy/check.sh: missing tools:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 3
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failures=()
step() {
  local name="$1"
  shift
  echo "== $name"
  if "$@"; then
    echo "   ok"
  else
    echo "   FAILED"
    failures+=("$name")
  fi
}

# ---------------------------------------------------------------- shell and YAML style
yaml_files() {
  find deploy/compose.yaml deploy/k8s \
    deploy/observability/otel-collector.yaml deploy/observability/prometheus.yml \
    deploy/observability/grafana/provisioning \
    -type f \( -name '*.yaml' -o -name '*.yml' \) | sort
}
yamllint_config='{extends: default, rules: {
  line-length: {max: 120}, document-start: disable, truthy: {check-keys: false},
  comments: {min-spaces-from-content: 1}, comments-indentation: disable}}'

step "shellcheck" shellcheck deploy/check.sh deploy/k8s/overlays/*/generate-secrets.sh
# shellcheck disable=SC2046 # file names have no spaces
step "yamllint" yamllint --strict -d "$yamllint_config" $(yaml_files)

# ---------------------------------------------------------------- compose
step "compose.yaml: compose-spec schema" \
  check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
step "compose.yaml: services, settings, probes" python3 deploy/check.py compose deploy/compose.yaml
if docker compose version >/dev/null 2>&1; then
  step "compose.yaml: docker compose config" \
    docker compose -f deploy/compose.yaml --profile observability config --quiet
else
  echo "== compose.yaml: docker compose config"
  echo "   skipped (optional: no docker compose plugin here)"
fi

# ---------------------------------------------------------------- observability
step "prometheus.yml + alerts.yml: promtool" promtool check config deploy/observability/prometheus.yml
step "prometheus.yml: scrape jobs" \
  python3 deploy/check.py prometheus deploy/observability/prometheus.yml deploy/compose.yaml
step "otel-collector.yaml: pipelines" \
  python3 deploy/check.py otel deploy/observability/otel-collector.yaml deploy/compose.yaml
step "grafana: provisioning and dashboards" \
  python3 deploy/check.py grafana deploy/observability/grafana deploy/compose.yaml

# ---------------------------------------------------------------- kubernetes
step "k8s: PrometheusRule matches alerts.yml" python3 deploy/check.py sync-rules --check

# Overlays render from a copy, so generate-secrets.sh can write throwaway secrets there.
cp -R deploy/k8s "$work/k8s"
for generator in "$work"/k8s/overlays/*/generate-secrets.sh; do
  if [[ -x "$generator" ]]; then
    "$generator" >/dev/null
  fi
done

check_kustomization() {
  local name="$1" dir="$2" rendered="$work/$1.yaml" externals=()
  "${kustomize_cmd[@]}" "$dir" >"$rendered" || return 1
  # The Secret keel-secrets comes from outside unless the kustomization generates it.
  if ! grep -Eq '^\s*- name: keel-secrets\s*$' "$dir/kustomization.yaml"; then
    externals=(--external-secret keel-secrets)
  fi
  kubernetes-validate --strict --quiet --no-warn "$rendered" || return 1
  kubernetes-validate --strict --quiet --no-warn -k "$MIN_KUBERNETES" "$rendered" || return 1
  python3 deploy/check.py k8s "$name" "$rendered" "${externals[@]}"
}

step "k8s base" check_kustomization base "$work/k8s/base"
for overlay in "$work"/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  step "k8s overlays/$name" check_kustomization "$name" "$overlay"
done

echo
if ((${#failures[@]})); then
  echo "deploy/check.sh: ${#failures[@]} check(s) failed:"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "deploy/check.sh: all deploy files valid"
