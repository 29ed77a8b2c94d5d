"""JSON schemas for kubeconform from CustomResourceDefinition files: one file per served version, at
<out>/<group>/<kind lower case>_<version>.json (kubeconform's `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}`).
Strict: an object that lists its properties accepts no others, unless the CRD keeps unknown fields there.

usage: python3 crd_schemas.py OUT_DIR CRD.yaml...
"""

import json
import os
import sys

import yaml


def strict(schema):
    """The schema with additionalProperties false on every object that lists properties."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def main():
    out_dir, files = sys.argv[1], sys.argv[2:]
    written = 0
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                group, kind = spec["group"], spec["names"]["kind"].lower()
                for version in spec["versions"]:
                    schema = version.get("schema", {}).get("openAPIV3Schema")
                    if schema is None:
                        continue
                    os.makedirs(os.path.join(out_dir, group), exist_ok=True)
                    target = os.path.join(out_dir, group, f"{kind}_{version['name']}.json")
                    with open(target, "w") as out:
                        json.dump(strict(schema), out)
                    written += 1
    if written == 0:
        sys.exit(f"no CustomResourceDefinition schema in {files}")


if __name__ == "__main__":
    main()
