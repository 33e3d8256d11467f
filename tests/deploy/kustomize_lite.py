"""A tiny kustomize renderer for the subset deploy/k8s uses, so tests need no kustomize binary.

Supported kustomization.yaml fields: ``resources`` (YAML files and directories with a kustomization.yaml),
``namespace``, ``labels`` (``pairs`` with ``includeSelectors: false``: metadata.labels only), ``images`` (``name``,
``newName``, ``newTag``, ``digest``) and ``patches`` with a ``target`` (kind/name/group/version) and an inline JSON6902
``patch`` (ops add, remove, replace, test). Anything else raises, so a manifest never relies on a feature this
renderer would silently ignore.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass", "IngressClass"}


class KustomizeError(Exception):
    pass


def build(path: str | Path) -> list[dict]:
    """Render the kustomization in directory ``path`` to a list of objects."""
    root = Path(path)
    kfile = root / "kustomization.yaml"
    if not kfile.exists():
        raise KustomizeError(f"{root}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported fields {sorted(unknown)}")

    objects: list[dict] = []
    for res in k.get("resources", []):
        target = (root / res).resolve()
        if target.is_dir():
            objects += build(target)
        elif target.is_file():
            objects += [d for d in yaml.safe_load_all(target.read_text()) if d]
        else:
            raise KustomizeError(f"{kfile}: resource {res!r} not found")

    for patch in k.get("patches", []):
        _apply_patch(objects, patch, kfile)
    for entry in k.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise KustomizeError(f"{kfile}: labels with includeSelectors/includeTemplates are not supported")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for image in k.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if "namespace" in k:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]

    seen = set()
    for obj in objects:
        key = (obj.get("apiVersion", "").split("/")[0], obj.get("kind"), obj["metadata"].get("namespace"),
               obj["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"duplicate object {key}")
        seen.add(key)
    return objects


# ---- images --------------------------------------------------------------------------------------------------------
def _split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        return image.split("@", 1)[0], "@" + image.split("@", 1)[1]
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, ":" + tag
    return image, ""


def _set_image(node, spec: dict) -> None:
    if isinstance(node, dict):
        for key in ("containers", "initContainers"):
            for c in node.get(key, []) if isinstance(node.get(key), list) else []:
                name, suffix = _split_image(c.get("image", ""))
                if name == spec["name"]:
                    new_name = spec.get("newName", name)
                    if "digest" in spec:
                        suffix = "@" + spec["digest"]
                    elif "newTag" in spec:
                        suffix = ":" + str(spec["newTag"])
                    c["image"] = new_name + suffix
        for value in node.values():
            _set_image(value, spec)
    elif isinstance(node, list):
        for value in node:
            _set_image(value, spec)


# ---- JSON6902 patches ----------------------------------------------------------------------------------------------
def _matches(obj: dict, target: dict) -> bool:
    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    checks = {"kind": obj.get("kind"), "name": obj["metadata"].get("name"), "group": group, "version": version,
              "namespace": obj["metadata"].get("namespace")}
    for key, want in target.items():
        if key not in checks:
            raise KustomizeError(f"unsupported patch target field {key!r}")
        if not re.fullmatch(str(want), str(checks[key] or "")):
            return False
    return True


def _apply_patch(objects: list[dict], patch: dict, kfile: Path) -> None:
    if set(patch) - {"target", "patch"} or "target" not in patch or "patch" not in patch:
        raise KustomizeError(f"{kfile}: only inline JSON6902 patches with a target are supported: {patch}")
    ops = yaml.safe_load(patch["patch"])
    if not isinstance(ops, list):
        raise KustomizeError(f"{kfile}: strategic-merge patches are not supported (use a JSON6902 op list)")
    hits = [o for o in objects if _matches(o, patch["target"])]
    if not hits:
        raise KustomizeError(f"{kfile}: patch target {patch['target']} matches no object")
    for obj in hits:
        for op in ops:
            apply_op(obj, op)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _child(node, key: str):
    if isinstance(node, list):
        return node[int(key)]
    return node[key]


def apply_op(doc: dict, op: dict) -> None:
    kind, parts = op["op"], _pointer(op["path"])
    parent = doc
    try:
        for key in parts[:-1]:
            parent = _child(parent, key)
        last = parts[-1]
        if kind == "test":
            if _child(parent, last) != op["value"]:
                raise KustomizeError(f"test failed at {op['path']}: {_child(parent, last)!r} != {op['value']!r}")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                del parent[last]
        elif kind == "replace":
            _child(parent, last)  # must exist
            if isinstance(parent, list):
                parent[int(last)] = copy.deepcopy(op["value"])
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "add":
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                else:
                    parent.insert(int(last), value)
            else:
                parent[last] = value
        else:
            raise KustomizeError(f"unsupported op {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise KustomizeError(f"{kind} {op['path']}: path not found ({exc!r})") from None
