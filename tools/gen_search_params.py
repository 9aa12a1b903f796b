#!/usr/bin/env python3
"""Project the official FHIR R5 SearchParameter Bundle onto the compact file Herald embeds.

Reads  shared/fhir/data/search-parameters-r5.json  (official R5 5.0.0 Bundle, 1244 entries)
Writes src/fhir/search/search-parameters-r5.json   (JSON array, one parameter per line)

Each output object keeps only what search evaluation needs, with keys in this order:
url, code, base (array), type, expression (absent when the definition has none),
target (array, possibly empty), component (array of {definition, expression}, composite only).

The five draft entries that are not part of the spec's own bundle (ids `example`,
`example-constraint`, `example-extension`, `example-reference`, `filter`; see
shared/fhir/data/README.md) are skipped. Output is sorted by url and byte-for-byte
reproducible, so re-running the script on unchanged input leaves the file unchanged.

Usage:
    tools/gen_search_params.py            # regenerate the embedded file
    tools/gen_search_params.py --check    # exit 1 if the embedded file is stale
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO.parent / "shared" / "fhir" / "data" / "search-parameters-r5.json"
DEFAULT_OUTPUT = REPO / "src" / "fhir" / "search" / "search-parameters-r5.json"

# Draft entries present in the package but not in the spec's bundle; keeping them would
# register a second `_id` and a second `Condition.subject`.
SKIPPED_IDS = {"example", "example-constraint", "example-extension", "example-reference", "filter"}
EXPECTED_COUNT = 1239
KNOWN_TYPES = {"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}


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


def build(bundle):
    if bundle.get("resourceType") != "Bundle":
        raise ValueError("input is not a Bundle")
    params = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") != "SearchParameter":
            raise ValueError(f"entry {entry.get('fullUrl')} is not a SearchParameter")
        if resource.get("id") in SKIPPED_IDS:
            continue
        if resource["type"] not in KNOWN_TYPES:
            raise ValueError(f"{resource['url']}: unknown type {resource['type']!r}")
        params.append(project(resource))
    params.sort(key=lambda p: p["url"])
    urls = [p["url"] for p in params]
    if len(set(urls)) != len(urls):
        raise ValueError("duplicate SearchParameter urls")
    if len(params) != EXPECTED_COUNT:
        raise ValueError(f"expected {EXPECTED_COUNT} parameters, found {len(params)}")
    return params


def render(params):
    lines = [json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in params]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()

    with args.input.open(encoding="utf-8") as f:
        text = render(build(json.load(f)))

    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is stale; run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {EXPECTED_COUNT} parameters to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
