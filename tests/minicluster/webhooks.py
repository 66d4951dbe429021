"""Trainer's TrainJob admission webhooks (kubeflow/trainer @8c0f505, `pkg/webhooks`).

- `defaulter.trainjob.trainer.kubeflow.org` stamps `spec.runtimePatches[*].time`.
- `validator.trainjob.trainer.kubeflow.org` rejects, with 403 `admission webhook ... denied the
  request: ...` (controller-runtime's `Denied`), a TrainJob whose runtime does not exist
  (`ClusterTrainingRuntime.validateObjects`), reserved torchrun env vars (torch plugin) and
  invalid runtime patches (jobset plugin).
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from . import errors as E
from .errors import FieldError, GoRaw
from .selectors import dns1123_subdomain
from .store import Store
from .util import dig, random_hex, rfc3339

VALIDATOR = "validator.trainjob.trainer.kubeflow.org"
TORCH_RESERVED = (
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
)
_HTTP_PATH = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")


def default(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """`TrainJobDefaulter.Default`: a `time` on each runtime patch written by this request."""
    olds = {p.get("manager"): p for p in dig(old, "spec", "runtimePatches", default=[]) or []}
    for patch in dig(obj, "spec", "runtimePatches", default=[]) or []:
        prior = olds.get(patch.get("manager"))
        if prior is not None and _without_time(prior) == _without_time(patch):
            if "time" in prior:
                patch["time"] = prior["time"]
            continue
        patch.setdefault("time", rfc3339())


def _without_time(patch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in patch.items() if k != "time"}


def _go_ptr() -> str:
    return f"(*string)(0xc00{random_hex(7)})"


def _runtime_ref_value(ref: dict[str, Any]) -> GoRaw:
    """`%#v` of a `v1alpha1.RuntimeRef` (pointer fields print as addresses)."""
    group = _go_ptr() if "apiGroup" in ref else "(*string)(nil)"
    kind = _go_ptr() if "kind" in ref else "(*string)(nil)"
    return GoRaw(
        f"v1alpha1.RuntimeRef{{Name:{E.go_quote(ref.get('name', ''))}, "
        f"APIGroup:{group}, Kind:{kind}}}"
    )


def _env_value(env: list[dict[str, Any]]) -> GoRaw:
    """`%#v` of a `[]v1.EnvVar`."""
    items = []
    for var in env:
        source = (
            "(*v1.EnvVarSource)(nil)"
            if "valueFrom" not in var
            else _go_ptr().replace("*string", "*v1.EnvVarSource")
        )
        items.append(
            f"v1.EnvVar{{Name:{E.go_quote(var.get('name', ''))}, "
            f"Value:{E.go_quote(var.get('value', ''))}, ValueFrom:{source}}}"
        )
    return GoRaw("[]v1.EnvVar{" + ", ".join(items) + "}")


def _patches_value(patches: list[dict[str, Any]]) -> GoRaw:
    """`%#v` of a `[]v1alpha1.RuntimePatch`."""
    items = []
    for patch in patches:
        when = _go_ptr().replace("*string", "*v1.Time") if "time" in patch else "(*v1.Time)(nil)"
        spec = (
            "(*v1alpha1.TrainingRuntimeSpecPatch)(nil)"
            if "trainingRuntimeSpec" not in patch
            else _go_ptr().replace("*string", "*v1alpha1.TrainingRuntimeSpecPatch")
        )
        items.append(
            f"v1alpha1.RuntimePatch{{Manager:{E.go_quote(patch.get('manager', ''))}, "
            f"Time:{when}, TrainingRuntimeSpec:{spec}}}"
        )
    return GoRaw("[]v1alpha1.RuntimePatch{" + ", ".join(items) + "}")


def find_runtime(store: Store, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ClusterTrainingRuntime a TrainJob names (None when missing)."""
    name = dig(obj, "spec", "runtimeRef", "name", default="")
    return store.get("clustertrainingruntimes", "", name) if name else None


def validate(
    store: Store,
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    snapshot: dict[str, Any] | None = None,
) -> None:
    """`TrainJobValidator.ValidateCreate/ValidateUpdate`; raises the webhook's denial."""
    ref = dig(obj, "spec", "runtimeRef", default={}) or {}
    kind = ref.get("kind", "ClusterTrainingRuntime")
    group = ref.get("apiGroup", "trainer.kubeflow.org")
    if (kind, group) != ("ClusterTrainingRuntime", "trainer.kubeflow.org"):
        if (kind, group) == ("TrainingRuntime", "trainer.kubeflow.org"):
            _deny(
                [
                    FieldError(
                        E.INVALID,
                        "spec.runtimeRef",
                        _runtime_ref_value(ref),
                        f'trainingruntimes.trainer.kubeflow.org "{ref.get("name")}" not '
                        "found: specified trainingRuntime must be created before the "
                        "TrainJob is created",
                    )
                ]
            )
        raise E.webhook_denied(VALIDATOR, f"unsupported runtime: {kind}.{group}")
    runtime = snapshot or find_runtime(store, obj)
    if runtime is None:
        detail = (
            f'ClusterTrainingRuntime.trainer.kubeflow.org "{ref.get("name")}" not found: '
            "specified clusterTrainingRuntime must be created before the TrainJob is "
            "created"
        )
        _deny([FieldError(E.INVALID, "spec.RuntimeRef", _runtime_ref_value(ref), detail)])
    errs = _jobset_checks(runtime, obj, old) + _torch_checks(runtime, obj)
    if errs:
        _deny(errs)


def _deny(errs: list[FieldError]) -> NoReturn:
    raise E.webhook_denied(VALIDATOR, E.aggregate(errs))


def _torch_checks(runtime: dict[str, Any], obj: dict[str, Any]) -> list[FieldError]:
    if dig(runtime, "spec", "mlPolicy", "torch") is None:
        return []
    env = dig(obj, "spec", "trainer", "env", default=[]) or []
    reserved = sorted({v.get("name") for v in env if v.get("name") in TORCH_RESERVED})
    if not reserved:
        return []
    detail = f"must not have reserved envs, invalid envs configured: [{' '.join(reserved)}]"
    return [FieldError(E.INVALID, "spec.trainer.env", _env_value(env), detail)]


def _manager_errors(manager: str) -> list[FieldError]:
    """`validation.IsDomainPrefixedPath` on `spec.runtimePatches.manager`."""
    path = "spec.runtimePatches.manager"
    if not manager:
        return [FieldError(E.REQUIRED, path)]
    host, sep, rest = manager.partition("/")
    if not sep or not host or not rest:
        return [
            FieldError(
                E.INVALID, path, manager, 'must be a domain-prefixed path (such as "acme.io/foo")'
            )
        ]
    errs = [FieldError(E.INVALID, path, host, msg) for msg in dns1123_subdomain(host)]
    if not _HTTP_PATH.match(rest):
        errs.append(
            FieldError(
                E.INVALID,
                path,
                rest,
                "Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')",
            )
        )
    return errs


def _jobset_checks(
    runtime: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None
) -> list[FieldError]:
    """The jobset plugin's `Validate` for runtime patches."""
    patches = dig(obj, "spec", "runtimePatches", default=[]) or []
    jobs = dig(runtime, "spec", "template", "spec", "replicatedJobs", default=[]) or []
    names: dict[str, set[str]] = {}
    for job in jobs:
        spec = dig(job, "template", "spec", "template", "spec", default={}) or {}
        names[job.get("name")] = {
            c.get("name")
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
        }
    errs: list[FieldError] = []
    if old is not None:
        errs += _patches_immutable(obj, old)
    value = _patches_value(patches)
    for patch in patches:
        errs += _manager_errors(patch.get("manager", ""))
        for job in (
            dig(patch, "trainingRuntimeSpec", "template", "spec", "replicatedJobs", default=[])
            or []
        ):
            if job.get("name") not in names:
                errs.append(
                    FieldError(
                        E.INVALID,
                        "spec.runtimePatches",
                        value,
                        "must not have "
                        "replicated job that doesn't exist in the runtime job template",
                    )
                )
                continue
            pod = dig(job, "template", "spec", "template", "spec", default={}) or {}
            errs += _container_patch_errors(pod, names[job["name"]], job["name"], value)
    return errs


def _container_patch_errors(
    pod: dict[str, Any], known: set[str], job: str, value: GoRaw
) -> list[FieldError]:
    errs = []
    for kind, key in (("initContainer", "initContainers"), ("container", "containers")):
        for container in pod.get(key) or []:
            name = container.get("name")
            if name not in known:
                errs.append(
                    FieldError(
                        E.INVALID,
                        "spec.runtimePatches",
                        value,
                        f"must not have {kind} that doesn't exist in the runtime job {job}",
                    )
                )
            elif (
                key == "containers"
                and container.get("env")
                and name in ("dataset-initializer", "model-initializer", "node")
            ):
                errs.append(
                    FieldError(
                        E.INVALID,
                        "spec.runtimePatches",
                        value,
                        "must not have "
                        "envs for the dataset-initializer, model-initializer, node containers",
                    )
                )
    return errs


def _patches_immutable(obj: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    new_patches = [_without_time(p) for p in dig(obj, "spec", "runtimePatches", default=[]) or []]
    old_patches = [_without_time(p) for p in dig(old, "spec", "runtimePatches", default=[]) or []]
    suspended = dig(obj, "spec", "suspend") is True or dig(old, "spec", "suspend") is True
    if new_patches != old_patches and not suspended:
        return [
            FieldError(
                E.FORBIDDEN,
                "spec.runtimePatches",
                "",
                "RuntimePatches can only be "
                "modified when the TrainJob is suspended before or after the update",
            )
        ]
    return []
