#!/usr/bin/env python3
"""Writes leaderworkerset-v1.json from the upstream LeaderWorkerSet CRD.

  make_lws_schema.py CRD.yaml TAG > tests/deploy/schemas/leaderworkerset-v1.json

CRD.yaml is config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml of
kubernetes-sigs/lws at TAG. No npm package ships this schema, so it is kept here,
made by this script (a maintainer's tool; it needs python3-yaml, the test does
not). What it keeps of the CRD's openAPIV3Schema (version v1): every field of
spec, with its types, enums, bounds and required lists, without descriptions
and defaults. What it replaces: the pod templates (leaderTemplate,
workerTemplate) and volumeClaimTemplates by references to the Kubernetes
definitions they embed (io.k8s.api.core.v1.PodTemplateSpec /
PersistentVolumeClaim), which check_manifests.py resolves from the Kubernetes
schemas of kubernetes-models (tools/fetch_k8s_schemas.sh); metadata by
ObjectMeta; status by an open object. check_manifests.py validates strictly
(unknown fields are errors) against it.
"""
import json
import sys

import yaml

REFS = {
    "leaderTemplate": {"$ref": "io.k8s.api.core.v1.PodTemplateSpec"},
    "workerTemplate": {"$ref": "io.k8s.api.core.v1.PodTemplateSpec"},
    "volumeClaimTemplates": {"type": "array",
                             "items": {"$ref": "io.k8s.api.core.v1.PersistentVolumeClaim"}},
}
DROP = ("description", "default")


def trim(node):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in DROP:
                continue
            if k == "properties":
                out[k] = {name: REFS.get(name) or trim(sub) for name, sub in v.items()}
            else:
                out[k] = trim(v)
        return out
    if isinstance(node, list):
        return [trim(x) for x in node]
    return node


def main():
    crd_path, tag = sys.argv[1], sys.argv[2]
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    root = version["schema"]["openAPIV3Schema"]
    schema = {
        "$comment": (f"kubernetes-sigs/lws {tag}, "
                     "config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml, version v1 "
                     "(openAPIV3Schema), written by tests/deploy/schemas/make_lws_schema.py: "
                     "descriptions and defaults dropped, pod templates and volume claim "
                     "templates as references to the Kubernetes definitions"),
        "type": "object",
        "required": ["apiVersion", "kind", "spec"],
        "properties": {
            "apiVersion": {"type": "string", "enum": ["leaderworkerset.x-k8s.io/v1"]},
            "kind": {"type": "string", "enum": ["LeaderWorkerSet"]},
            "metadata": {"$ref": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": trim(root["properties"]["spec"]),
            "status": {"type": "object"},
        },
    }
    json.dump(schema, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
