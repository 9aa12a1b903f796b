"""Starts the built herald binary the way each deployment file starts it, and stops it.

For the Dockerfile (with compose.yaml's environment), the Kubernetes StatefulSet (with its
ConfigMap's herald.toml) and the systemd unit (with config/herald.toml): take the arguments
from the file, put a free loopback port and a temporary data directory in place of the
listen address and the data directory, start the binary, wait until the probes the file
names (/healthz, /readyz) answer 200 and the FHIR base answers, send SIGTERM and expect exit
status 0 within the shutdown grace. Also checks that each stop timeout (docker's, the pod's,
systemd's) is above the shutdown grace that deployment configures.

Usage: python deploy/smoke.py target/debug/herald   (needs ruamel.yaml: check-jsonschema's)
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request

from ruamel.yaml import YAML

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
DEFAULT_GRACE = 10.0  # config/default.toml server.shutdown_grace


def seconds(text):
    """'20s', '1m', '500ms', or a number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(text).strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def run(name, argv, env, probes, grace):
    """Starts argv, waits for every probe path and /readyz to answer 200, SIGTERMs, checks exit 0."""
    probes = list(dict.fromkeys(probes + ["/readyz"]))
    port = re.search(r"127\.0\.0\.1:(\d+)", " ".join(argv)).group(1)
    root = f"http://127.0.0.1:{port}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_") and k != "RUST_LOG"}
    clean.update(env)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, env=clean, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not all(status(root + p) == 200 for p in probes):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{name}: not ready (exit {proc.poll()})")
                time.sleep(0.05)
            got = status(root + "/fhir/metadata", timeout=30)
            if got != 200:
                raise SystemExit(f"{name}: GET /fhir/metadata answered {got}, not 200")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=grace + 5)
            if code != 0:
                raise SystemExit(f"{name}: exit status {code} after SIGTERM")
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace")[-4000:])
            raise
    print(f"ok -- {name}: ready on {', '.join(probes)}, exit 0 after SIGTERM")


def dockerfile_entrypoint():
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        for line in f:
            if line.startswith("ENTRYPOINT "):
                return json.loads(line[len("ENTRYPOINT "):])
    raise SystemExit("Dockerfile: no ENTRYPOINT")


def main():
    binary = os.path.abspath(sys.argv[1])
    yaml = YAML(typ="safe")
    with tempfile.TemporaryDirectory() as tmp:
        # Dockerfile ENTRYPOINT, with compose.yaml's environment.
        entry = dockerfile_entrypoint()
        if entry[:2] != ["herald", "serve"]:
            raise SystemExit(f"Dockerfile: ENTRYPOINT is not `herald serve ...`: {entry}")
        with open(os.path.join(DEPLOY, "compose.yaml")) as f:
            compose = yaml.load(f)
        herald = compose["services"]["herald"]
        if seconds(herald["stop_grace_period"]) <= DEFAULT_GRACE:
            raise SystemExit("compose.yaml: stop_grace_period is not above server.shutdown_grace")
        port = free_port()
        argv = [binary] + [
            {"0.0.0.0:8080": f"127.0.0.1:{port}", "/var/lib/herald": os.path.join(tmp, "docker")}.get(a, a) for a in entry[1:]
        ]
        env = {k: str(v) for k, v in herald.get("environment", {}).items()}
        run("Dockerfile + compose.yaml", argv, env, ["/healthz"], DEFAULT_GRACE)

        # Kubernetes: the StatefulSet's args, the ConfigMap's herald.toml, the probes' paths.
        with open(os.path.join(DEPLOY, "k8s", "configmap.yaml")) as f:
            configmap = yaml.load(f)
        with open(os.path.join(DEPLOY, "k8s", "statefulset.yaml")) as f:
            statefulset = yaml.load(f)
        toml_text = configmap["data"]["herald.toml"]
        grace = seconds(tomllib.loads(toml_text).get("server", {}).get("shutdown_grace", DEFAULT_GRACE))
        pod = statefulset["spec"]["template"]["spec"]
        if pod["terminationGracePeriodSeconds"] <= grace:
            raise SystemExit("statefulset.yaml: terminationGracePeriodSeconds is not above server.shutdown_grace")
        container = pod["containers"][0]
        config = os.path.join(tmp, "herald.toml")
        with open(config, "w") as f:
            f.write(toml_text)
        mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
        port = free_port()
        argv = [binary] + [
            {"0.0.0.0:8080": f"127.0.0.1:{port}", "/var/lib/herald": os.path.join(tmp, "k8s")}.get(a, a) for a in entry[1:]
        ]
        argv += [a.replace(mount + "/herald.toml", config) for a in container["args"]]
        probes = [container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"]]
        run("k8s StatefulSet + ConfigMap", argv, {}, probes, grace)

        # systemd: ExecStart with config/herald.toml in place of /etc/herald/herald.toml.
        unit = {}
        with open(os.path.join(DEPLOY, "systemd", "herald.service")) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and not line.startswith("#"):
                    unit.setdefault(key, value)
        if seconds(unit["TimeoutStopSec"]) <= DEFAULT_GRACE:
            raise SystemExit("herald.service: TimeoutStopSec is not above server.shutdown_grace")
        port = free_port()
        words = shlex.split(unit["ExecStart"])
        if words[0] != "/usr/local/bin/herald" or words[1] != "serve":
            raise SystemExit(f"herald.service: ExecStart is not `/usr/local/bin/herald serve ...`: {words}")
        replace = {
            "${STATE_DIRECTORY}": os.path.join(tmp, "systemd"),
            "/etc/herald/herald.toml": os.path.join(ROOT, "config", "herald.toml"),
        }
        argv = [binary] + [replace.get(w, re.sub(r"^[\d.]+:8080$", f"127.0.0.1:{port}", w)) for w in words[1:]]
        run("systemd unit", argv, {}, ["/healthz", "/readyz"], DEFAULT_GRACE)


if __name__ == "__main__":
    main()
