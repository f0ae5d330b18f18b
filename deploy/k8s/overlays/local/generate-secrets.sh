#!/usr/bin/env bash
# Writes random secrets for the local overlay into deploy/k8s/overlays/local/secrets/ (git-ignored),
# keeping any that already exist. Run once before `kubectl apply -k deploy/k8s/overlays/local`.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets"
mkdir -p "$dir"
umask 077

random_hex() {
  head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \n'
}

write_once() {
  local file="$dir/$1" value="$2"
  if [[ -s "$file" ]]; then
    return
  fi
  printf '%s' "$value" >"$file"
  echo "wrote $file"
}

write_once jwt_secret "$(random_hex)"
write_once pepper_p1 "$(random_hex)"
write_once postgres_password "$(random_hex)"
write_once database_url "postgres://keel:$(cat "$dir/postgres_password")@keel-postgres:5432/keel"
write_once redis_url "redis://keel-redis:6379"
