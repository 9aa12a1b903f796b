"""Starts the built herald binary the way each deployment file starts it, and stops it.

For the Dockerfile (with compose.yaml's environment), the Kubernetes StatefulSet (with its
ConfigMap's herald.toml) and the systemd unit (with config/herald.toml): take the arguments
from the file, put a free loopback port and a temporary data directory in place of the
listen address and the data directory, start the binary, wait until the probes the file
names (/healthz, /readyz) answer 200 and the FHIR base answers, send SIGTERM and expect exit
status 0 within the shutdown grace. Also checks that each stop timeout (docker's, the pod's,
systemd's) is above the shutdown grace that deployment configures.

The cluster files (compose-cluster.yaml, k8s-cluster/) are run as a cluster: one local
JetStream nats-server stands in for the three NATS servers (so HERALD_CLUSTER__REPLICAS=1), and
every Herald node the file defines is started with that file's arguments, environment and
configuration. Besides the listen port and the data directory, the NATS URLs and the nodes' own
host names (advertise_url, websocket.url) are swapped for loopback ones, after checking that
each node names all NATS servers and itself. The nodes keep listening on 0.0.0.0, as in a
container. Once every node answers /readyz, a Patient is written through each node (followers
forward to the writer) and read back from every node; then all nodes get SIGTERM and must exit
0. Without nats-server on PATH the cluster runs are skipped, or fail under CI=true.

Usage: python deploy/smoke.py target/debug/herald   (needs ruamel.yaml: check-jsonschema's)
"""

import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
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
    port = re.search(r"(?:127\.0\.0\.1|0\.0\.0\.0):(\d+)", " ".join(argv)).group(1)
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


def request(method, url, body=None, headers=None, timeout=10):
    """(status, body) of one HTTP request; status None when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/fhir+json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def url_of_service(url, host_port):
    """Whether `url` is http(s)://HOST:PORT[/...] for host_port 'HOST:PORT'."""
    return re.fullmatch(rf"[a-z]+://{re.escape(host_port)}(/.*)?", url) is not None


class Nats:
    """One local JetStream nats-server on loopback ports with a temporary store."""

    def __init__(self, tmp):
        self.port, self.monitor = free_port(), free_port()
        self.log = tempfile.TemporaryFile()
        argv = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor)]
        argv += ["-n", "smoke", "-js", "-sd", os.path.join(tmp, "nats")]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"nats://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        # /healthz answers 200 once JetStream is enabled.
        while status(f"http://127.0.0.1:{self.monitor}/healthz") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"nats-server did not get ready:\n{self.output()}")
            time.sleep(0.05)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def nats_available(name):
    if shutil.which("nats-server"):
        return True
    if os.environ.get("CI") == "true":
        raise SystemExit(f"{name}: nats-server is not on PATH (CI installs Debian's nats-server)")
    print(f"skip -- {name}: nats-server is not on PATH (install Debian's nats-server to run it)")
    return False


def run_cluster(name, nodes, grace, headers=None):
    """Starts every node ({name, argv, env, port, probes}) at once, waits until all are ready,
    writes a Patient through each node and reads each back from every node, then SIGTERMs all
    and expects exit status 0 from each."""
    headers = headers or {}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_") and k != "RUST_LOG"}
    procs = []
    try:
        for node in nodes:
            log = tempfile.TemporaryFile()
            env = dict(clean, **node["env"])
            proc = subprocess.Popen(node["argv"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            procs.append((node, proc, log))
        roots = {node["name"]: f"http://127.0.0.1:{node['port']}" for node in nodes}
        deadline = time.monotonic() + 90
        for node, proc, _ in procs:
            probes = list(dict.fromkeys(node["probes"] + ["/readyz"]))
            while not all(status(roots[node["name"]] + p) == 200 for p in probes):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{name}: {node['name']} not ready (exit {proc.poll()})")
                time.sleep(0.05)
        for node in nodes:
            path = f"/fhir/Patient/smoke-{node['name']}"
            resource = {"resourceType": "Patient", "id": f"smoke-{node['name']}"}
            # 503 while the nodes elect the writer: retry as a client would.
            deadline = time.monotonic() + 60
            while True:
                got, body = request("PUT", roots[node["name"]] + path, resource, headers, timeout=40)
                if got in (200, 201):
                    break
                if got not in (None, 503) or time.monotonic() > deadline:
                    raise SystemExit(f"{name}: PUT {path} through {node['name']} answered {got}: {body[:500]!r}")
                time.sleep(0.2)
            # The node written through reads its own write at once; the others within seconds.
            for other in [node] + [n for n in nodes if n is not node]:
                deadline = time.monotonic() + (0 if other is node else 15)
                while True:
                    got, body = request("GET", roots[other["name"]] + path, headers=headers)
                    if got == 200 and json.loads(body).get("id") == resource["id"]:
                        break
                    if time.monotonic() >= deadline:
                        raise SystemExit(
                            f"{name}: GET {path} from {other['name']} (written through {node['name']}) answered {got}"
                        )
                    time.sleep(0.1)
        for _, proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for node, proc, _ in procs:
            code = proc.wait(timeout=grace + 5)
            if code != 0:
                raise SystemExit(f"{name}: {node['name']} exit status {code} after SIGTERM")
    except BaseException:
        for node, proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.seek(0)
            sys.stderr.write(f"--- {node['name']}\n" + log.read().decode("utf-8", "replace")[-3000:])
        raise
    finally:
        for _, _, log in procs:
            log.close()
    print(
        f"ok -- {name}: {len(nodes)} nodes ready, a Patient written through each node read back from every node, "
        "exit 0 after SIGTERM"
    )


def compose_cluster(binary, entry, tmp, yaml):
    """compose-cluster.yaml: its Herald services with the Dockerfile entrypoint, their command
    and environment, on one local nats-server."""
    name = "compose-cluster.yaml"
    with open(os.path.join(DEPLOY, name)) as f:
        compose = yaml.load(f)
    services = compose["services"]
    heralds = sorted(s for s, v in services.items() if v.get("build", {}).get("dockerfile") == "deploy/Dockerfile")
    nats = sorted(s for s, v in services.items() if str(v.get("image", "")).startswith("nats:"))
    if len(heralds) < 3 or len(nats) < 3:
        raise SystemExit(f"{name}: expected three Herald and three NATS services, found {heralds} and {nats}")
    for s in nats:
        cmd = services[s]["command"]
        if "--jetstream" not in cmd or cmd[cmd.index("--server_name") + 1] != s:
            raise SystemExit(f"{name}: {s} must run with --jetstream and --server_name {s}")
        routes = cmd[cmd.index("--routes") + 1].split(",")
        if sorted(routes) != sorted(f"nats://{n}:6222" for n in nats):
            raise SystemExit(f"{name}: {s} --routes {routes} does not name every NATS service")
    volumes = [services[s]["volumes"][0].split(":")[0] for s in heralds + nats]
    if len(set(volumes)) != len(volumes):
        raise SystemExit(f"{name}: the servers do not each have their own volume: {volumes}")
    nodes = []
    for s in heralds:
        service = services[s]
        if seconds(service["stop_grace_period"]) <= DEFAULT_GRACE:
            raise SystemExit(f"{name}: {s} stop_grace_period is not above server.shutdown_grace")
        cmd = list(service["command"])
        urls = cmd[cmd.index("--nats") + 1].split(",")
        if sorted(urls) != sorted(f"nats://{n}:4222" for n in nats):
            raise SystemExit(f"{name}: {s} --nats {urls} does not list every NATS service")
        if cmd[cmd.index("--node-id") + 1] != s:
            raise SystemExit(f"{name}: {s} --node-id is not its service name")
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        if env.get("HERALD_CLUSTER__ADVERTISE_URL") != f"http://{s}:8080":
            raise SystemExit(f"{name}: {s} HERALD_CLUSTER__ADVERTISE_URL is not http://{s}:8080 (its own service)")
        port = free_port()
        env["HERALD_CLUSTER__ADVERTISE_URL"] = f"http://127.0.0.1:{port}"
        env["HERALD_CLUSTER__REPLICAS"] = "1"
        cmd[cmd.index("--nats") + 1] = NATS_URL
        argv = [binary] + [
            {"0.0.0.0:8080": f"0.0.0.0:{port}", "/var/lib/herald": os.path.join(tmp, "compose-cluster", s)}.get(a, a)
            for a in entry[1:] + cmd
        ]
        test = service["healthcheck"]["test"]
        probes = [re.sub(r"^http://127\.0\.0\.1:8080", "", t) for t in test if t.startswith("http://127.0.0.1:8080/")]
        if not probes:
            raise SystemExit(f"{name}: {s} healthcheck names no http://127.0.0.1:8080/ path")
        nodes.append({"name": s, "argv": argv, "env": env, "port": port, "probes": probes})
    if not nats_available(name):
        return
    on_nats(tmp, "compose-cluster.yaml (3 Herald nodes, one local nats-server)", nodes, DEFAULT_GRACE)


# Stands for the local nats-server's URL in the nodes' arguments until it runs.
NATS_URL = "<nats>"


def on_nats(tmp, name, nodes, grace, headers=None):
    """run_cluster on a fresh local nats-server."""
    server = Nats(tmp)
    try:
        nodes = [dict(n, argv=[server.url if a == NATS_URL else a for a in n["argv"]]) for n in nodes]
        run_cluster(name, nodes, grace, headers)
    except BaseException:
        sys.stderr.write("--- nats-server\n" + server.output())
        raise
    finally:
        server.stop()
        shutil.rmtree(os.path.join(tmp, "nats"), ignore_errors=True)


def k8s_cluster(binary, entry, tmp, yaml):
    """k8s-cluster/: the Herald StatefulSet's pods (args and env with $(POD_NAME) resolved) with
    the ConfigMap's herald.toml, on one local nats-server. The ConfigMap leaves [auth] to the
    operator, so this run adds one API key of its own."""
    name = "k8s-cluster"
    docs = {}
    for fname in sorted(os.listdir(os.path.join(DEPLOY, name))):
        with open(os.path.join(DEPLOY, name, fname)) as f:
            for doc in yaml.load_all(f):
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    herald = docs[("StatefulSet", "herald")]
    nats = docs[("StatefulSet", "nats")]
    for svc in (herald["spec"]["serviceName"], nats["spec"]["serviceName"]):
        if docs[("Service", svc)]["spec"].get("clusterIP") != "None":
            raise SystemExit(f"{name}: {svc} is not a headless Service")
    toml_text = docs[("ConfigMap", "herald-config")]["data"]["herald.toml"]
    cfg = tomllib.loads(toml_text)
    grace = seconds(cfg.get("server", {}).get("shutdown_grace", DEFAULT_GRACE))
    pod = herald["spec"]["template"]["spec"]
    if pod["terminationGracePeriodSeconds"] <= grace:
        raise SystemExit(f"{name}: terminationGracePeriodSeconds is not above server.shutdown_grace")
    if cfg.get("cluster", {}).get("replicas", 3) != nats["spec"]["replicas"]:
        raise SystemExit(f"{name}: cluster.replicas is not the number of NATS servers")
    nats_conf = docs[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    nats_pods = [f"{nats['metadata']['name']}-{i}.{nats['spec']['serviceName']}" for i in range(nats["spec"]["replicas"])]
    routes = re.findall(r"nats://([\w.-]+):6222", nats_conf)
    if sorted(routes) != sorted(nats_pods):
        raise SystemExit(f"{name}: nats.conf routes {routes} are not the NATS pods {nats_pods}")
    container = pod["containers"][0]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
    key = secrets.token_hex(16)
    digest = hashlib.sha256(key.encode()).hexdigest()
    config = os.path.join(tmp, "herald-cluster.toml")
    if "\napi_keys = []\n" not in toml_text:
        raise SystemExit(f"{name}: herald.toml has no `api_keys = []` line for this run's key")
    with open(config, "w") as f:
        f.write(toml_text.replace(
            "\napi_keys = []\n", f'\napi_keys = [{{ client = "smoke", sha256 = "{digest}", scopes = "system/*.cruds" }}]\n'
        ))
    headless = herald["spec"]["serviceName"]
    nodes = []
    for i in range(herald["spec"]["replicas"]):
        pod_name = f"{herald['metadata']['name']}-{i}"
        port = free_port()
        # The downward API and $(VAR) references, as the kubelet resolves them.
        known = {}
        for var in container.get("env", []):
            if "valueFrom" in var:
                if var["valueFrom"]["fieldRef"]["fieldPath"] != "metadata.name":
                    raise SystemExit(f"{name}: {var['name']} comes from a field this run does not know")
                known[var["name"]] = pod_name
            else:
                known[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: known.get(m.group(1), m.group(0)), var["value"])
        args = [re.sub(r"\$\((\w+)\)", lambda m: known.get(m.group(1), m.group(0)), a) for a in container["args"]]
        if args[args.index("--node-id") + 1] != pod_name:
            raise SystemExit(f"{name}: --node-id is not the pod name")
        urls = args[args.index("--nats") + 1].split(",")
        if sorted(urls) != sorted(f"nats://{p}:4222" for p in nats_pods):
            raise SystemExit(f"{name}: --nats {urls} does not list every NATS pod {nats_pods}")
        args[args.index("--nats") + 1] = NATS_URL
        args = [a.replace(mount + "/herald.toml", config) for a in args]
        own = f"{pod_name}.{headless}:8080"
        env = {k: v for k, v in known.items() if k.startswith("HERALD_")}
        for var in ("HERALD_CLUSTER__ADVERTISE_URL", "HERALD_WEBSOCKET__URL"):
            if not url_of_service(env.get(var, ""), own):
                raise SystemExit(f"{name}: {pod_name} {var} {env.get(var)!r} does not name {own}")
            env[var] = env[var].replace(own, f"127.0.0.1:{port}")
        env["HERALD_CLUSTER__REPLICAS"] = "1"
        argv = [binary] + [
            {"0.0.0.0:8080": f"0.0.0.0:{port}", "/var/lib/herald": os.path.join(tmp, "k8s-cluster", pod_name)}.get(a, a)
            for a in entry[1:] + args
        ]
        probes = [container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")]
        nodes.append({"name": pod_name, "argv": argv, "env": env, "port": port, "probes": probes})
    if not nats_available(name):
        return
    on_nats(
        tmp,
        "k8s-cluster StatefulSets + ConfigMaps (3 Herald pods, one local nats-server, an API key)",
        nodes,
        grace,
        {"Authorization": f"Bearer {key}"},
    )


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
        # 0.0.0.0 as in the container: Herald's start-up checks for that address must pass.
        argv = [binary] + [
            {"0.0.0.0:8080": f"0.0.0.0:{port}", "/var/lib/herald": os.path.join(tmp, "docker")}.get(a, a) for a in entry[1:]
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
        # The operator adds credentials before applying (the ConfigMap says so): this run adds
        # an API key of its own, and listens on 0.0.0.0 as the pod does.
        if "\napi_keys = []\n" not in toml_text:
            raise SystemExit("k8s/configmap.yaml: herald.toml has no `api_keys = []` line for this run's key")
        digest = hashlib.sha256(secrets.token_hex(16).encode()).hexdigest()
        with open(config, "w") as f:
            f.write(toml_text.replace(
                "\napi_keys = []\n", f'\napi_keys = [{{ client = "smoke", sha256 = "{digest}", scopes = "system/*.cruds" }}]\n'
            ))
        mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
        port = free_port()
        argv = [binary] + [
            {"0.0.0.0:8080": f"0.0.0.0:{port}", "/var/lib/herald": os.path.join(tmp, "k8s")}.get(a, a) for a in entry[1:]
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

        # The cluster files: every node at once, on one local nats-server.
        compose_cluster(binary, entry, tmp, yaml)
        k8s_cluster(binary, entry, tmp, yaml)


if __name__ == "__main__":
    main()
