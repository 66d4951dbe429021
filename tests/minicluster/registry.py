"""Object lifecycle with the API server's checks, in its order.

create: decode -> NamespaceLifecycle (404 `namespaces "x" not found`) -> prune unknown fields
(Warning header, or 400 with `fieldValidation=Strict`) -> defaults -> server metadata and
`generateName` -> mutating webhooks -> validation (metadata, schema, list maps, CEL; 422) ->
validating webhooks (403) -> storage (409 AlreadyExists). Updates and patches follow the same
path with the old object (transition rules, immutable fields, preserved status). Deletes
honour finalizers and `propagationPolicy` (Foreground keeps the object, with
`deletionTimestamp` and the `foregroundDeletion` finalizer, until the garbage collector -- the
operator -- has removed its dependents).
"""

from __future__ import annotations

import json
from typing import Any

from . import cel, webhooks
from . import errors as E
from .errors import FieldError
from .schema import CrdSchema, apply_defaults, prune
from .selectors import dns1123_label, dns1123_subdomain, label_value, qualified_name
from .store import Resource, Store
from .util import deep, new_uid, random_suffix, rfc3339

SNAPSHOTS = "_runtimesnapshots"  # private: not served by the API
ORPHANED = "_orphaned"  # private: uids of objects deleted with propagationPolicy=Orphan
STANDARD_FINALIZERS = {"kubernetes", "orphan", "foregroundDeletion"}
_BLOCKING = {E.NOT_SUPPORTED, E.REQUIRED, E.TOO_LONG, E.TOO_MANY, E.TYPE_INVALID}


def is_trainjob(res: Resource) -> bool:
    """Whether the resource is Trainer's TrainJob (webhooks apply)."""
    return (res.group, res.plural) == ("trainer.kubeflow.org", "trainjobs")


def _check_type(res: Resource, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise E.bad_request(
            "the object provided is unrecognized (must be of type "
            f"{res.kind}): couldn't get version/kind; json parse error"
        )
    if not obj.get("kind"):
        raise E.bad_request(
            f"Object 'Kind' is missing in '{json.dumps(obj, separators=(',', ':'))}'"
        )
    if obj.get("apiVersion") != res.api_version:
        raise E.bad_request(
            f"the API version in the data ({obj.get('apiVersion')}) does not "
            f"match the expected API version ({res.api_version})"
        )
    if obj["kind"] != res.kind:
        raise E.bad_request(
            f"the kind in the data ({obj['kind']}) does not match the expected kind ({res.kind})"
        )
    obj.setdefault("metadata", {})
    if not isinstance(obj["metadata"], dict):
        raise E.bad_request(
            "json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta"
        )
    return obj


def validate_meta(res: Resource, obj: dict[str, Any]) -> list[FieldError]:
    """`ValidateObjectMeta`: name, generateName, labels, annotations, finalizers."""
    meta, errs = obj["metadata"], []
    check = dns1123_label if res.plural == "namespaces" else dns1123_subdomain
    name = meta.get("name")
    if not name:
        errs.append(FieldError(E.REQUIRED, "metadata.name", "", "name or generateName is required"))
    else:
        errs += [FieldError(E.INVALID, "metadata.name", name, m) for m in check(name)]
    for key, value in (meta.get("labels") or {}).items():
        errs += [FieldError(E.INVALID, "metadata.labels", key, m) for m in qualified_name(key)]
        errs += [FieldError(E.INVALID, "metadata.labels", value, m) for m in label_value(value)]
    for key in meta.get("annotations") or {}:
        errs += [
            FieldError(E.INVALID, "metadata.annotations", key, m)
            for m in qualified_name(key.lower())
        ]
    if len(json.dumps(meta.get("annotations") or {})) > 256 * 1024:
        errs.append(
            FieldError(E.TOO_LONG, "metadata.annotations", "", "may not be more than 262144 bytes")
        )
    for index, fin in enumerate(meta.get("finalizers") or []):
        path = f"metadata.finalizers[{index}]"
        errs += [FieldError(E.INVALID, path, fin, m) for m in qualified_name(fin)]
        if "/" not in fin and fin not in STANDARD_FINALIZERS:
            errs.append(
                FieldError(
                    E.INVALID,
                    path,
                    fin,
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            )
    return errs


class Registry:
    """Writes objects into the store as the API server does."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _prepare(
        self, res: Resource, schema: CrdSchema | None, obj: dict[str, Any], field_validation: str
    ) -> list[str]:
        """Prune and default a custom resource; returns Warning texts."""
        if schema is None:
            return []
        unknown = prune(obj, schema.raw)
        apply_defaults(obj, schema.raw)
        notes = [f'unknown field "{path}"' for path in unknown]
        if notes and field_validation == "Strict":
            raise E.bad_request("strict decoding error: " + ", ".join(notes))
        return [] if field_validation == "Ignore" else notes

    def _validate(
        self,
        res: Resource,
        schema: CrdSchema | None,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
    ) -> None:
        errs = validate_meta(res, obj)
        if schema is not None:
            errs += schema.validate(obj)
            if any(err.type in _BLOCKING for err in errs):
                errs.append(
                    FieldError(
                        E.INVALID,
                        "<nil>",
                        None,
                        "some validation rules were "
                        "not checked because the object was invalid; correct the "
                        "existing errors to complete validation",
                    )
                )
            else:
                errs += cel.validate(obj, old, schema.raw)
        if errs:
            name = obj["metadata"].get("name", "")
            raise E.invalid(res.kind, res.group, name, errs)

    def create(
        self,
        res: Resource,
        schema: CrdSchema | None,
        namespace: str,
        body: Any,
        field_validation: str = "",
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], list[str]]:
        """POST: returns the stored object and warnings."""
        obj = _check_type(res, deep(body))
        meta = obj["metadata"]
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise E.bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
            if not self.store.namespace_exists(namespace):
                raise E.not_found("namespaces", "", namespace)
        else:
            meta.pop("namespace", None)
        warnings = self._prepare(res, schema, obj, field_validation)
        version_set = bool(meta.get("resourceVersion"))
        for key in (
            "uid",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ):
            meta.pop(key, None)
        meta.update(uid=new_uid(), creationTimestamp=rfc3339(), generation=1)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_suffix()
        if res.status_subresource:
            obj.pop("status", None)
        if is_trainjob(res):
            webhooks.default(obj, None)
        self._validate(res, schema, obj, None)
        if is_trainjob(res):
            webhooks.validate(self.store, obj, None)
        if version_set:
            message = "resourceVersion should not be set on objects to be created"
            raise E.ApiError(
                500,
                "InternalError",
                f"Internal error occurred: {message}",
                {"causes": [{"message": message}]},
            )
        with self.store.lock:
            if self.store.get(res.plural, namespace if res.namespaced else "", meta["name"]):
                raise E.already_exists(res.plural, res.group, meta["name"])
            return self._persist(res.plural, obj, dry_run), warnings

    def update(
        self,
        res: Resource,
        schema: CrdSchema | None,
        old: dict[str, Any],
        new: Any,
        field_validation: str = "",
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], list[str]]:
        """PUT / PATCH result: validates against the old object and stores the new one."""
        obj = _check_type(res, deep(new))
        meta, old_meta = obj["metadata"], old["metadata"]
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise E.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the "
                f"name on the URL ({old_meta['name']})"
            )
        rv = meta.get("resourceVersion")
        if rv and rv != old_meta.get("resourceVersion"):
            raise E.conflict(res.plural, res.group, old_meta["name"])
        warnings = self._prepare(res, schema, obj, field_validation)
        if meta.get("uid") not in (None, old_meta["uid"]):
            raise E.invalid(
                res.kind,
                res.group,
                old_meta["name"],
                [FieldError(E.INVALID, "metadata.uid", meta["uid"], "field is immutable")],
            )
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if res.status_subresource:
            obj.pop("status", None)
            if "status" in old:
                obj["status"] = deep(old["status"])
        if _spec_of(obj) != _spec_of(old):
            meta["generation"] = old_meta.get("generation", 1) + 1
        if is_trainjob(res):
            webhooks.default(obj, old)
        self._validate(res, schema, obj, old)
        if is_trainjob(res):
            webhooks.validate(self.store, obj, old, self._snapshot(obj))
        return self._store_update(res, old, obj, dry_run), warnings

    def _snapshot(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Trainer's `<job>-runtime-snapshot` (kept privately: ConfigMaps are not served)."""
        meta = obj["metadata"]
        snapshot = self.store.get(SNAPSHOTS, meta["namespace"], meta["name"])
        if snapshot is None or snapshot["owner"] != meta["uid"]:
            return None
        return snapshot["runtime"]

    def _persist(self, plural: str, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        """Store the object, unless this is a dry run (then return it as it would be)."""
        return deep(obj) if dry_run else self.store.put(plural, obj)

    def _drop(self, plural: str, namespace: str, name: str, dry_run: bool) -> None:
        if not dry_run:
            self.store.remove(plural, namespace, name)

    def _store_update(
        self, res: Resource, old: dict[str, Any], obj: dict[str, Any], dry_run: bool = False
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        namespace = meta.get("namespace", "")
        with self.store.lock:
            current = self.store.get(res.plural, namespace, meta["name"])
            if current is None:
                raise E.not_found(res.plural, res.group, meta["name"])
            if current["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise E.conflict(res.plural, res.group, meta["name"])
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if obj == old:
                return old
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                self._drop(res.plural, namespace, meta["name"], dry_run)
                return obj
            return self._persist(res.plural, obj, dry_run)

    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        options: dict[str, Any],
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """DELETE: the response body (the object while it lingers, else a Success Status)."""
        with self.store.lock:  # read-modify-write of the latest version, atomically
            obj = self.store.get(res.plural, namespace if res.namespaced else "", name)
            if obj is None:
                raise E.not_found(res.plural, res.group, name)
            return self._delete(res, obj, options, dry_run)

    def _delete(
        self, res: Resource, obj: dict[str, Any], options: dict[str, Any], dry_run: bool
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") not in (None, meta["uid"]) or pre.get("resourceVersion") not in (
            None,
            meta.get("resourceVersion"),
        ):
            raise E.conflict(res.plural, res.group, meta["name"])
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        if policy not in ("Foreground", "Background", "Orphan"):
            raise E.invalid(
                "DeleteOptions",
                "",
                "",
                [
                    FieldError(
                        E.NOT_SUPPORTED,
                        "propagationPolicy",
                        policy,
                        'supported values: "Foreground", "Background", "Orphan", "nil"',
                    )
                ],
            )
        if res.plural == "pods":
            return self._delete_pod(obj, options, dry_run)
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and not dry_run:
            self.store.put(ORPHANED, {"metadata": {"name": meta["uid"]}})
        if finalizers:
            meta["finalizers"] = finalizers
            meta.setdefault("deletionTimestamp", rfc3339())
            meta.setdefault("deletionGracePeriodSeconds", 0)
            return self._persist(res.plural, obj, dry_run)
        self._drop(res.plural, meta.get("namespace", ""), meta["name"], dry_run)
        details = {"name": meta["name"], "group": res.group, "kind": res.plural, "uid": meta["uid"]}
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {k: v for k, v in details.items() if v},
        }

    def _delete_pod(
        self, pod: dict[str, Any], options: dict[str, Any], dry_run: bool
    ) -> dict[str, Any]:
        """Graceful pod deletion: the kubelet stops the containers, then removes the object."""
        meta = pod["metadata"]
        grace = options.get("gracePeriodSeconds")
        forced = grace == 0
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        if meta.get("deletionTimestamp") and grace >= meta.get("deletionGracePeriodSeconds", 0):
            return pod
        if (forced or not pod["spec"].get("nodeName")) and not meta.get("finalizers"):
            self._drop("pods", meta["namespace"], meta["name"], dry_run)
            return pod
        meta["deletionTimestamp"] = rfc3339()
        meta["deletionGracePeriodSeconds"] = int(grace)
        meta["generation"] = meta.get("generation", 1) + 1
        return self._persist("pods", pod, dry_run)


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
