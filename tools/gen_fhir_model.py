#!/usr/bin/env python3
"""Project the official FHIR StructureDefinitions onto the compact type model Herald embeds.

One model per FHIR version Herald serves (`--version`, default r5):
  r5   reads shared/fhir/data/profiles-{types,resources}.json      (5.0.0)
       writes src/fhir/model/model-r5.json
  r4b  reads shared/fhir/data/r4b/profiles-{types,resources}.json  (4.3.0)
       writes src/fhir/model/model-r4b.json
  r4   reads shared/fhir/data/r4/profiles-{types,resources}.json   (4.0.1)
       writes src/fhir/model/model-r4.json
The inputs are the Bundles with ids `types` and `resources`; the output is one JSON object,
one type per line.

The output is what FHIRPath navigation needs and nothing more:
- `types`: every StructureDefinition with derivation `specialization` (plus the roots: `Base`
  in R5, `Element` and `Resource` in R4 and R4B), one object per type with keys name, kind, base (absent for roots), abstract, implements
  (R5 interfaces such as CanonicalResource, absent when empty) and elements. Backbone
  elements become pseudo-types named by their path (`Patient.contact`, kind `backbone`,
  base BackboneElement or Element), and the FHIRPath system types used by primitive
  values (`System.String`, ...) are listed with kind `system`.
- Each element is {name, type[, many][, choice][, s][, min][, fhirType]}: the name without `[x]`, the
  type codes (a backbone element's own path, a contentReference's target path, `System.X`
  for http://hl7.org/fhirpath/System.X), `many` when max is not "1", `choice` for `[x]`,
  `s` when the definition marks it isSummary, `min` when its minimum cardinality is 1 or
  more (both for `_summary=true|text`), and for system-typed elements the FHIR type named by
  the structuredefinition-fhir-type extension (`Resource.id` is a System.String whose FHIR
  type is `id`).
- A type lists only the elements its snapshot does not inherit unchanged: `Patient.id` is
  found through DomainResource -> Resource. The script checks that lookup through the base
  chain reproduces every snapshot element of every type before it writes anything.
- `aliases`: constraint profiles on data types (SimpleQuantity, MoneyQuantity) -> base type.
- Logical models are left out (R4 ships `MetadataResource` as one; it is no resource type).

Output is sorted by type name and byte-for-byte reproducible.

Usage:
    tools/gen_fhir_model.py [--version r4|r4b|r5]            # regenerate the embedded file
    tools/gen_fhir_model.py [--version r4|r4b|r5] --check    # exit 1 if it is stale
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "fhir" / "data"
MODEL_DIR = REPO / "src" / "fhir" / "model"

SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
EXT_FHIR_TYPE = SD_PREFIX + "structuredefinition-fhir-type"
EXT_IMPLEMENTS = SD_PREFIX + "structuredefinition-implements"
# FHIRPath's own types (FHIRPath N1 section 5.1, with Long from 2.0); the data uses a subset.
SYSTEM_TYPES = ["Boolean", "Date", "DateTime", "Decimal", "Integer", "Long", "Quantity", "String", "Time"]
KINDS = {"primitive-type", "complex-type", "resource"}


class Release:
    """What differs between the FHIR versions: where the definitions are, which types are
    roots, and how many definitions of each kind a complete input has (so that a wrong or
    truncated input fails loudly)."""

    def __init__(self, number, data, output, roots, counts):
        self.number = number
        self.types = data / "profiles-types.json"
        self.resources = data / "profiles-resources.json"
        self.output = output
        self.roots = roots
        self.counts = counts


RELEASES = {
    # Base and 47 complex types; 162 resources, 4 of them abstract (Resource, DomainResource,
    # CanonicalResource, MetadataResource).
    "r5": Release("5.0.0", DATA, MODEL_DIR / "model-r5.json", {"Base"},
                  {"primitive-type": 21, "complex-type": 48, "resource": 162}),
    # 43 complex-type definitions less the 2 constraint profiles; 143 resources, Resource and
    # DomainResource abstract (data/r4b/README.md).
    "r4b": Release("4.3.0", DATA / "r4b", MODEL_DIR / "model-r4b.json", {"Element", "Resource"},
                   {"primitive-type": 20, "complex-type": 42, "resource": 143}),
    # 43 complex-type definitions less the 2 constraint profiles; 149 resource definitions less
    # the logical MetadataResource, Resource and DomainResource abstract (data/r4/README.md).
    "r4": Release("4.0.1", DATA / "r4", MODEL_DIR / "model-r4.json", {"Element", "Resource"},
                  {"primitive-type": 20, "complex-type": 41, "resource": 148}),
}


def load_definitions(path, bundle_id):
    with path.open(encoding="utf-8") as f:
        bundle = json.load(f)
    if bundle.get("resourceType") != "Bundle" or bundle.get("id") != bundle_id:
        raise ValueError(f"{path}: expected the Bundle with id {bundle_id!r}")
    resources = (entry.get("resource", {}) for entry in bundle.get("entry", []))
    return [r for r in resources if r.get("resourceType") == "StructureDefinition"]


def type_code(type_ref):
    code = type_ref["code"]
    if code.startswith(SYSTEM_PREFIX):
        return "System." + code[len(SYSTEM_PREFIX):]
    if ":" in code or "/" in code:
        raise ValueError(f"unexpected type code {code!r}")
    return code


def fhir_type(type_refs):
    """The FHIR type a system-typed element stands for, from the fhir-type extension."""
    found = {
        ext["valueUrl"]
        for t in type_refs
        if t["code"].startswith(SYSTEM_PREFIX)
        for ext in t.get("extension", [])
        if ext.get("url") == EXT_FHIR_TYPE
    }
    if len(found) > 1:
        raise ValueError(f"several fhir-type extensions: {sorted(found)}")
    return found.pop() if found else None


def project_element(el, children_of):
    """The compact element for a snapshot element, and the pseudo-type base if it has children."""
    path = el["path"]
    name = path.rsplit(".", 1)[1]
    choice = name.endswith("[x]")
    if choice:
        name = name[: -len("[x]")]
    refs = el.get("type", [])
    pseudo_base = None
    if "contentReference" in el:
        if refs:
            raise ValueError(f"{path}: contentReference together with types")
        target = el["contentReference"]
        if not target.startswith("#"):
            raise ValueError(f"{path}: external contentReference {target!r}")
        types = [target[1:]]
    elif path in children_of:
        codes = [type_code(t) for t in refs]
        if codes not in (["BackboneElement"], ["Element"]):
            raise ValueError(f"{path}: element with children has types {codes}")
        types, pseudo_base = [path], codes[0]
    else:
        types = [type_code(t) for t in refs]
        if not types:
            raise ValueError(f"{path}: element without type")
        if len(types) > 1 and not choice:
            raise ValueError(f"{path}: several types on a non-choice element")
    out = {"name": name, "type": types}
    if el.get("max") != "1":
        out["many"] = True
    if choice:
        out["choice"] = True
    # `s` (isSummary) and `min` (only when at least 1) drive `_summary=true|text`; short keys
    # because a third of all elements carry the flag.
    if el.get("isSummary"):
        out["s"] = True
    if el.get("min", 0) >= 1:
        out["min"] = el["min"]
    ft = fhir_type(refs)
    if ft is not None:
        out["fhirType"] = ft
    return out, pseudo_base


def project_definition(sd):
    """One entry for the type itself plus one per backbone element, keyed by name."""
    name = sd["type"]
    elements = sd["snapshot"]["element"]
    if not elements or elements[0]["path"] != name:
        raise ValueError(f"{name}: snapshot does not start at {name}")
    paths = [el["path"] for el in elements]
    if len(set(paths)) != len(paths):
        raise ValueError(f"{name}: repeated paths (slices?) in snapshot")
    children_of = {p.rsplit(".", 1)[0] for p in paths if "." in p}
    base_url = sd.get("baseDefinition")
    if base_url is not None and not base_url.startswith(SD_PREFIX):
        raise ValueError(f"{name}: base {base_url!r} is not a core type")
    implements = sorted(
        ext["valueUri"][len(SD_PREFIX):] for ext in sd.get("extension", []) if ext.get("url") == EXT_IMPLEMENTS
    )
    types = {
        name: {
            "name": name,
            "kind": sd["kind"],
            "base": base_url[len(SD_PREFIX):] if base_url else None,
            "abstract": bool(sd.get("abstract")),
            "implements": implements,
            "elements": [],
            "snapshot": {},
        }
    }
    for el in elements[1:]:
        parent = el["path"].rsplit(".", 1)[0]
        if parent not in types:
            raise ValueError(f"{el['path']}: parent {parent} is not a backbone element")
        element, pseudo_base = project_element(el, children_of)
        types[parent]["snapshot"][element["name"]] = element
        if pseudo_base is not None:
            types[el["path"]] = {
                "name": el["path"],
                "kind": "backbone",
                "base": pseudo_base,
                "abstract": False,
                "implements": [],
                "elements": [],
                "snapshot": {},
            }
    return types


def find(types, type_name, element_name):
    """Element lookup through the base chain, as src/fhir/model does it."""
    seen = set()
    while type_name is not None and type_name not in seen:
        seen.add(type_name)
        t = types[type_name]
        for element in t["elements"]:
            if element["name"] == element_name:
                return element
        type_name = t["base"]
    return None


def same(a, b):
    """Equal for navigation and summaries. fhirType is left out: snapshots disagree on it for the inherited
    `id` (Element says string; Age, Extension and others say id), and the defining type's
    statement is the one kept."""
    return a is not None and all(a.get(k) == b.get(k) for k in ("type", "many", "choice", "s", "min"))


def ancestors_first(types):
    order, done = [], set()

    def visit(name, trail):
        if name in done:
            return
        if name in trail:
            raise ValueError(f"base cycle through {name}")
        base = types[name]["base"]
        if base is not None:
            if base not in types:
                raise ValueError(f"{name}: unknown base {base}")
            visit(base, trail | {name})
        done.add(name)
        order.append(name)

    for name in sorted(types):
        visit(name, set())
    return order


def build(definitions, release):
    types, aliases = {}, {}
    for sd in definitions:
        kind, derivation = sd.get("kind"), sd.get("derivation")
        if kind == "logical" and release.roots != {"Base"}:
            continue
        if kind not in KINDS:
            raise ValueError(f"{sd.get('url')}: unexpected kind {kind!r}")
        if derivation == "constraint":
            if kind != "complex-type":
                raise ValueError(f"{sd['url']}: unexpected constraint profile")
            aliases[sd["name"]] = sd["type"]
            continue
        if derivation not in ("specialization", None) or (derivation is None and sd["type"] not in release.roots):
            raise ValueError(f"{sd['url']}: unexpected derivation {derivation!r}")
        if sd["url"] != SD_PREFIX + sd["type"] or sd["name"] != sd["type"]:
            raise ValueError(f"{sd['url']}: name, type and url disagree")
        for name, entry in project_definition(sd).items():
            if name in types:
                raise ValueError(f"type {name} defined twice")
            types[name] = entry
    for name in SYSTEM_TYPES:
        types["System." + name] = {
            "name": "System." + name,
            "kind": "system",
            "base": None,
            "abstract": False,
            "implements": [],
            "elements": [],
            "snapshot": {},
        }

    counts = {k: sum(1 for t in types.values() if t["kind"] == k) for k in release.counts}
    if counts != release.counts:
        raise ValueError(f"expected {release.counts} definitions, found {counts}")

    # Keep an element unless the base chain already yields it unchanged. Ancestors are done
    # first, so `find` sees their final element lists.
    for name in ancestors_first(types):
        t = types[name]
        for element in t["snapshot"].values():
            if t["base"] is None or not same(find(types, t["base"], element["name"]), element):
                t["elements"].append(element)

    for name, t in types.items():
        for element in t["snapshot"].values():
            if not same(find(types, name, element["name"]), element):
                raise ValueError(f"{name}.{element['name']}: base chain does not reproduce the snapshot")
        for element in t["elements"]:
            for code in element["type"]:
                if code not in types:
                    raise ValueError(f"{name}.{element['name']}: unknown type {code}")
        for interface in t["implements"]:
            if interface not in types:
                raise ValueError(f"{name}: implements unknown {interface}")
    for alias, target in aliases.items():
        if alias in types or target not in types:
            raise ValueError(f"alias {alias} -> {target} is not usable")
    return types, aliases


def render(types, aliases, fhir_version):
    def compact(t):
        out = {"name": t["name"], "kind": t["kind"]}
        if t["base"] is not None:
            out["base"] = t["base"]
        if t["abstract"]:
            out["abstract"] = True
        if t["implements"]:
            out["implements"] = t["implements"]
        out["elements"] = t["elements"]
        return out

    def dump(value):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    lines = [dump(compact(types[name])) for name in sorted(types)]
    return (
        "{" + f'"fhirVersion":{dump(fhir_version)},"aliases":{dump(dict(sorted(aliases.items())))},"types":[\n'
        + ",\n".join(lines)
        + "\n]}\n"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", choices=sorted(RELEASES), default="r5", help="FHIR version (default r5)")
    parser.add_argument("--types", type=Path, help="data types Bundle (default: the version's)")
    parser.add_argument("--resources", type=Path, help="resources Bundle (default: the version's)")
    parser.add_argument("--output", type=Path, help="model file (default: the version's)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    release = RELEASES[args.version]
    args.types = args.types or release.types
    args.resources = args.resources or release.resources
    args.output = args.output or release.output

    definitions = load_definitions(args.types, "types") + load_definitions(args.resources, "resources")
    types, aliases = build(definitions, release)
    text = render(types, aliases, release.number)

    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is stale; run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {len(types)} types and {len(aliases)} aliases to {args.output} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
