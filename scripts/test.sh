#!/usr/bin/env bash
# Runs every check Orderflow's CI runs: formatting, lints and all tests (unit, and integration tests against
# real PostgreSQL, redis-server and Apache Kafka started on 127.0.0.1 by the test harness).
#
# Installs what is missing first: Debian packages when run as root, otherwise it says what to install.
# The Kafka broker's jars are fetched with Maven by the harness on first use (cached in ~/.cache/orderflow).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v perl >/dev/null 2>&1 || missing+=(perl)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
pkg-config --exists zlib 2>/dev/null || missing+=(zlib1g-dev)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "error: missing prerequisites; install them with:" >&2
    echo "  sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found: install Rust (stable) with rustup" >&2; exit 1; }
command -v go >/dev/null 2>&1 || { echo "error: go not found: install Go 1.24 or newer (it builds Helm for the chart's checks)" >&2; exit 1; }

# Debian starts a system redis-server on install; the tests start their own on free ports and need none.
echo "== cargo fmt";    cargo fmt --all -- --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== schemas check (each topic's newest schema against its earlier versions)"
cargo run --quiet --locked -p orderflow -- schemas check
echo "== Helm chart (lint, templates against the Kubernetes and CRD schemas, rendered configuration loads)"
./scripts/check-helm.sh
echo "== promtool (alert rules and their unit tests)"
promtool check rules deploy/observability/alerts.yml
(cd deploy/observability && promtool test rules alerts.test.yml)
echo "== compose.yaml against the Compose specification (check-jsonschema's vendored schema)"
venv="${HOME}/.cache/orderflow/python-check-jsonschema"
[[ -x "$venv/bin/check-jsonschema" ]] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q check-jsonschema==0.39.0; }
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml
echo "== cargo test";   cargo test --workspace --locked
