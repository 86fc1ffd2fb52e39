"""Kubernetes and CRD schemas for check_manifests.py, read with the standard library.

The Kubernetes definitions come from npm packages that ship them as plain
JSON-schema objects inside CommonJS modules (tools/fetch_k8s_schemas.sh installs
them into .cache/k8s_schemas/node_modules):

  kubernetes-models/_schemas/*.js                  Kubernetes 1.27 OpenAPI definitions
  @kubernetes-models/apimachinery/_schemas/*.js    ObjectMeta, Quantity, IntOrString, ...
  @kubernetes-models/prometheus-operator/**.js     monitoring.coreos.com CRDs

Each module holds `const schema = {...};` (JSON text) and registers it under an
id (`register)("io.k8s.api.core.v1.PodSpec", schema)` or `const schemaId =
"...";`); references are written "ID#". The LeaderWorkerSet schema is the
committed schemas/leaderworkerset-v1.json (its references name the same ids).

Every definition is made strict the way kubeconform's -strict and kubectl's
--validate=strict are: an object schema with properties accepts no other
property. OpenAPI's nullable becomes a "null" type.
"""

import glob
import json
import os
import re

SCHEMA_SOURCES = (
    "kubernetes-models/_schemas/*.js",
    "@kubernetes-models/apimachinery/_schemas/*.js",
    "@kubernetes-models/prometheus-operator/**/*.js",
)
LWS_SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas",
                          "leaderworkerset-v1.json")
LWS_ID = "leaderworkerset.x-k8s.io.v1.LeaderWorkerSet"

_SCHEMA_RE = re.compile(r"^const schema = (\{.*?^\});", re.S | re.M)
_ID_RE = re.compile(r'register\)\("([^"]+)", schema\)|const schemaId = "([^"]+)";')


class SchemaError(Exception):
    pass


def _strict(schema):
    """A copy of SCHEMA with refs as JSON pointers, nullable as a type, and
    additionalProperties: false wherever properties are listed and nothing says
    otherwise."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key == "$ref":
            out[key] = "#/definitions/" + value.rstrip("#")
        elif key in ("items", "additionalProperties", "not", "oneOf", "anyOf", "allOf"):
            out[key] = _strict(value)
        elif key == "nullable":
            continue
        else:
            out[key] = value
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = types + ["null"]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def load_definitions(node_modules):
    """{id: strict schema} for every definition the packages ship, and the LWS one."""
    if not os.path.isdir(os.path.join(node_modules, "kubernetes-models")):
        raise SchemaError(f"no kubernetes-models in {node_modules}: run tools/fetch_k8s_schemas.sh")
    definitions = {}
    for pattern in SCHEMA_SOURCES:
        files = sorted(glob.glob(os.path.join(node_modules, pattern), recursive=True))
        if not files:
            raise SchemaError(f"{os.path.join(node_modules, pattern)}: no files "
                              "(run tools/fetch_k8s_schemas.sh)")
        for path in files:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            body, ident = _SCHEMA_RE.search(text), _ID_RE.search(text)
            if not body or not ident:
                continue  # an index module, a model class without a schema
            try:
                definitions[ident.group(1) or ident.group(2)] = json.loads(body.group(1))
            except ValueError as e:
                raise SchemaError(f"{path}: the schema is not JSON ({e}); a package "
                                  "version with compiled validators only?") from e
    with open(LWS_SCHEMA, encoding="utf-8") as f:
        definitions[LWS_ID] = json.load(f)
    strict = {ident: _strict(s) for ident, s in definitions.items()}
    missing = sorted({ref for ref in _refs(strict) if ref not in strict})
    # The apiextensions JSON type is referenced but not shipped; nothing of ours uses it.
    missing = [m for m in missing if not m.endswith(".JSON")]
    if missing:
        raise SchemaError(f"unresolved references: {', '.join(missing[:5])}")
    return strict


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties":
                for sub in value.values():
                    yield from _refs(sub)
            elif key == "$ref":
                yield value[len("#/definitions/"):]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for sub in node:
            yield from _refs(sub)


def kinds(definitions):
    """{(apiVersion, kind): definition id} for the top-level object definitions."""
    out = {}
    for ident, schema in definitions.items():
        props = schema.get("properties") or {}
        versions = (props.get("apiVersion") or {}).get("enum") or []
        names = (props.get("kind") or {}).get("enum") or []
        if len(versions) == 1 and len(names) == 1:
            out[(versions[0], names[0])] = ident
    return out


def field_path(parts):
    """['spec', 'containers', 0, 'image'] -> 'spec.containers[0].image'."""
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or "(the object)"


def _leaves(error):
    """The errors that say what is wrong: inside oneOf/anyOf, those of the
    branches other than the bare "null" one."""
    if error.context:
        branches = [e for e in error.context
                    if not (e.validator == "type" and e.validator_value == "null")]
        out = []
        for e in branches:
            out.extend(_leaves(e))
        if out:
            return out
    return [error]


def validate(jsonschema, definitions, ident, obj):
    """[(field path, message)] for OBJ against definition IDENT, one per problem."""
    validator = jsonschema.Draft7Validator({"definitions": definitions,
                                            "$ref": f"#/definitions/{ident}"})
    problems = []
    for error in validator.iter_errors(obj):
        for leaf in _leaves(error):
            path = list(leaf.absolute_path)
            if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict):
                known = (leaf.schema.get("properties") or {}).keys()
                for name in sorted(set(leaf.instance) - set(known)):
                    problems.append((field_path(path + [name]), "unknown field"))
                continue
            message = leaf.message
            if len(message) > 200:
                message = message[:200] + "..."
            problems.append((field_path(path), message))
    merged = {}  # one line per field: the messages of a oneOf's branches together
    for path, message in problems:
        merged.setdefault(path, [])
        if message not in merged[path]:
            merged[path].append(message)
    return [(path, "; ".join(messages)) for path, messages in merged.items()]
