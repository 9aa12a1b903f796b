#!/usr/bin/env python3
"""Project the official FHIR SearchParameter Bundle onto the compact file Herald embeds.

One file per FHIR version Herald serves (`--version`, default r5):
  r5   reads shared/fhir/data/search-parameters-r5.json    (R5 5.0.0 Bundle, 1244 entries)
       writes src/fhir/search/search-parameters-r5.json
  r4b  reads shared/fhir/data/r4b/search-parameters.json   (R4B 4.3.0 Bundle, 1414 entries)
       writes src/fhir/search/search-parameters-r4b.json
  r4   reads shared/fhir/data/r4/search-parameters.json    (R4 4.0.1 Bundle, 1375 entries)
       writes src/fhir/search/search-parameters-r4.json
The output is a JSON array, one parameter per line.

Each output object keeps only what search evaluation needs, with keys in this order:
url, code, base (array), type, expression (absent when the definition has none),
target (array, possibly empty), component (array of {definition, expression}, composite only).

R5: the five draft entries that are not part of the spec's own bundle (ids `example`,
`example-constraint`, `example-extension`, `example-reference`, `filter`; see
shared/fhir/data/README.md) are skipped.

R4 and R4B: the Subscriptions Backport IG 1.1.0's four Subscription parameters
(shared/fhir/backport/definitions/SearchParameter-Subscription-*.json: topic, filter-criteria,
payload-type, custom-channel) are added, since a backport server's clients search by them.
Three of their published expressions call `extension('…')` on the Subscription itself, where
the extensions never are (shared/fhir/backport/README.md); they are replaced by expressions
that reach the real locations (`Subscription.criteria`, `channel.payload`, `channel.type`).
The script checks that the input still says what it replaces, and that the core parameters
the backport server capability statement requires (`url`, `status`) exist.

R4 and R4B: Herald's own Task `output` parameter (`HERALD_PARAMS`), which R5 defines
(`http://hl7.org/fhir/SearchParameter/Task-output`) and R4/R4B core do not. Herald finds the
Tasks that list an output through it (`ingest::outputs`, the `output-modified` topic) and the
built-in topics include `Task:output`. It carries a Herald canonical, not an HL7 one, and R5's
expression `Task.output.value.ofType(Reference)`, which is valid R4/R4B FHIRPath: the script
checks that `Task.output.value[x]` is a choice that allows `Reference` in the version's
StructureDefinition, and that the core bundle still has no Task `output` of its own. Targets
are every concrete resource type of the version (as R5's are).

Output is sorted by url and byte-for-byte reproducible, so re-running the script on
unchanged input leaves the file unchanged.

Usage:
    tools/gen_search_params.py [--version r4|r4b|r5]            # regenerate the embedded file
    tools/gen_search_params.py [--version r4|r4b|r5] --check    # exit 1 if it is stale
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "fhir"
DATA = SHARED / "data"
BACKPORT = SHARED / "backport" / "definitions"
OUT_DIR = REPO / "src" / "fhir" / "search"

KNOWN_TYPES = {"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}

BACKPORT_SD = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
BACKPORT_SP = "http://hl7.org/fhir/uv/subscriptions-backport/SearchParameter/"
# Backport parameter id -> (the 1.1.0 expression, the expression Herald indexes instead).
# `None` as replacement keeps the published expression.
BACKPORT_PARAMS = {
    "Subscription-topic": ("Subscription.criteria", None),
    "Subscription-filter-criteria": (
        f"(extension('{BACKPORT_SD}backport-filter-criteria').value as string)",
        f"Subscription.criteria.extension('{BACKPORT_SD}backport-filter-criteria').value.ofType(string)",
    ),
    "Subscription-payload-type": (
        f"(extension('{BACKPORT_SD}backport-payload-content').value as Code)",
        f"Subscription.channel.payload.extension('{BACKPORT_SD}backport-payload-content').value.ofType(code)",
    ),
    "Subscription-custom-channel": (
        f"(extension('{BACKPORT_SD}backport-channel-type').value as Coding)",
        f"Subscription.channel.type.extension('{BACKPORT_SD}backport-channel-type').value.ofType(Coding)",
    ),
}
HERALD_SP = "http://herald.dev/fhir/SearchParameter/"
# Herald's own parameters for R4 and R4B: the R5 definitions R4/R4B core lack, under Herald's
# canonical. `target` is filled with the version's resource types.
HERALD_PARAMS = [
    {
        "resourceType": "SearchParameter",
        "id": "Task-output",
        "url": HERALD_SP + "Task-output",
        "name": "output",
        "status": "active",
        "description": "Resources a Task lists in Task.output (R5's Task-output, for R4 and R4B)",
        "code": "output",
        "base": ["Task"],
        "type": "reference",
        "expression": "Task.output.value.ofType(Reference)",
    },
]
# Core parameters a backport server must answer (CapabilityStatement backport-subscription-server).
REQUIRED_CORE = {
    "http://hl7.org/fhir/SearchParameter/Subscription-url": ("url", "Subscription.channel.endpoint"),
    "http://hl7.org/fhir/SearchParameter/Subscription-status": ("status", "Subscription.status"),
}


class Release:
    def __init__(self, input_path, output, skipped_ids, expected_count, backport, profiles=None):
        self.input = input_path
        self.output = output
        # The version's resource StructureDefinitions (R4/R4B: for HERALD_PARAMS).
        self.profiles = profiles
        self.skipped_ids = skipped_ids
        self.expected_count = expected_count
        self.backport = backport


RELEASES = {
    # Draft entries present in the package but not in the spec's bundle; keeping them would
    # register a second `_id` and a second `Condition.subject`.
    "r5": Release(
        DATA / "search-parameters-r5.json",
        OUT_DIR / "search-parameters-r5.json",
        {"example", "example-constraint", "example-extension", "example-reference", "filter"},
        1239,
        False,
    ),
    # 1414 core entries (data/r4b/README.md) plus the 4 backport parameters and Herald's 1.
    "r4b": Release(
        DATA / "r4b" / "search-parameters.json",
        OUT_DIR / "search-parameters-r4b.json",
        set(),
        1419,
        True,
        DATA / "r4b" / "profiles-resources.json",
    ),
    # 1375 core entries (data/r4/README.md) plus the 4 backport parameters and Herald's 1.
    "r4": Release(
        DATA / "r4" / "search-parameters.json",
        OUT_DIR / "search-parameters-r4.json",
        set(),
        1380,
        True,
        DATA / "r4" / "profiles-resources.json",
    ),
}


def project(resource):
    """The compact form of one SearchParameter resource."""
    out = {
        "url": resource["url"],
        "code": resource["code"],
        "base": list(resource["base"]),
        "type": resource["type"],
    }
    if "expression" in resource:
        out["expression"] = resource["expression"]
    out["target"] = list(resource.get("target", []))
    if resource["type"] == "composite":
        out["component"] = [
            {"definition": c["definition"], "expression": c["expression"]}
            for c in resource.get("component", [])
        ]
    return out


def load_json(path):
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def backport_params(directory):
    """The backport IG's Subscription parameters, expressions fixed as documented above."""
    params = []
    for param_id, (published, replacement) in sorted(BACKPORT_PARAMS.items()):
        resource = load_json(directory / f"SearchParameter-{param_id}.json")
        if resource.get("resourceType") != "SearchParameter" or resource.get("url") != BACKPORT_SP + param_id:
            raise ValueError(f"{param_id}: not the backport SearchParameter expected")
        if resource.get("base") != ["Subscription"]:
            raise ValueError(f"{param_id}: base {resource.get('base')!r}, expected Subscription")
        if resource.get("expression") != published:
            raise ValueError(f"{param_id}: expression changed to {resource.get('expression')!r}; review the fix")
        if replacement is not None:
            resource = dict(resource, expression=replacement)
        params.append(project(resource))
    return params


def resource_definitions(profiles):
    """The concrete resource types of a profiles-resources Bundle, and their StructureDefinitions."""
    out = {}
    for entry in profiles.get("entry", []):
        sd = entry.get("resource", {})
        if (
            sd.get("resourceType") == "StructureDefinition"
            and sd.get("kind") == "resource"
            and not sd.get("abstract")
            and sd.get("derivation") == "specialization"
        ):
            out[sd["id"]] = sd
    return out


def herald_params(profiles, core):
    """HERALD_PARAMS for a version: checked against its model, targets its resource types."""
    definitions = resource_definitions(profiles)
    elements = {el["path"]: el for el in definitions.get("Task", {}).get("snapshot", {}).get("element", [])}
    value = elements.get("Task.output.value[x]")
    if value is None or "Reference" not in [t.get("code") for t in value.get("type", [])]:
        raise ValueError("Task.output.value[x] is not a choice allowing Reference; review Task-output")
    params = []
    for resource in HERALD_PARAMS:
        if any(p["code"] == resource["code"] and set(p["base"]) & set(resource["base"]) for p in core):
            raise ValueError(f"{resource['url']}: the core bundle now defines {resource['code']}; drop Herald's")
        params.append(project(dict(resource, target=sorted(definitions))))
    return params


def build(bundle, release, backport_dir):
    if bundle.get("resourceType") != "Bundle":
        raise ValueError("input is not a Bundle")
    params = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") != "SearchParameter":
            raise ValueError(f"entry {entry.get('fullUrl')} is not a SearchParameter")
        if resource.get("id") in release.skipped_ids:
            continue
        params.append(project(resource))
    if release.backport:
        by_url = {p["url"]: p for p in params}
        for url, (code, expression) in REQUIRED_CORE.items():
            found = by_url.get(url)
            if found is None or found["code"] != code or found.get("expression") != expression:
                raise ValueError(f"{url}: missing or changed ({found!r})")
        params += backport_params(backport_dir)
    if release.profiles is not None:
        params += herald_params(load_json(release.profiles), params)
    for p in params:
        if p["type"] not in KNOWN_TYPES:
            raise ValueError(f"{p['url']}: unknown type {p['type']!r}")
    params.sort(key=lambda p: p["url"])
    urls = [p["url"] for p in params]
    if len(set(urls)) != len(urls):
        raise ValueError("duplicate SearchParameter urls")
    codes = [(base, p["code"]) for p in params for base in p["base"]]
    if len(set(codes)) != len(codes):
        raise ValueError("two parameters with one code on one base")
    if len(params) != release.expected_count:
        raise ValueError(f"expected {release.expected_count} parameters, found {len(params)}")
    return params


def render(params):
    lines = [json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in params]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", choices=sorted(RELEASES), default="r5", help="FHIR version (default r5)")
    parser.add_argument("--input", type=Path, help="SearchParameter Bundle (default: the version's)")
    parser.add_argument("--backport", type=Path, default=BACKPORT, help="backport IG definitions directory")
    parser.add_argument("--output", type=Path, help="compact file (default: the version's)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    release = RELEASES[args.version]
    args.input = args.input or release.input
    args.output = args.output or release.output

    params = build(load_json(args.input), release, args.backport)
    text = render(params)

    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is stale; run {Path(__file__).name} --version {args.version}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {len(params)} parameters to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
