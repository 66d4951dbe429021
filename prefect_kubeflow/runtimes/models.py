"""The parts of a Kubeflow Trainer runtime document (``trainer.kubeflow.org/v1alpha1``
``ClusterTrainingRuntime``/``TrainingRuntime``) that prefect-kubeflow reads.

Only those fields are modelled; every other field is accepted and ignored, so runtimes written
for newer Trainer releases still load. (The generated ``kubeflow-trainer-api`` models were
evaluated: 388 modules that take ~0.7 s to import, for the six fields read here.)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from prefect_kubeflow import constants

RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
# metadata.name: a DNS-1123 subdomain, as Kubernetes requires of object names.
RUNTIME_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


# Field names are the YAML's camelCase, so that errors name the field as the user wrote it.
class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EnvVar(_Shape):
    name: str = Field(min_length=1)
    value: str | None = None  # entries with valueFrom resolve in a cluster only; skipped here


class Resources(_Shape):
    limits: dict[str, int | float | str] = Field(default_factory=dict)
    requests: dict[str, int | float | str] = Field(default_factory=dict)


class Container(_Shape):
    name: str
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)


class PodSpec(_Shape):
    containers: list[Container] = Field(min_length=1)


class PodTemplate(_Shape):
    spec: PodSpec


class BatchJobSpec(_Shape):
    template: PodTemplate


class BatchJobTemplate(_Shape):
    spec: BatchJobSpec


class ReplicatedJob(_Shape):
    name: str
    template: BatchJobTemplate


class JobSetSpec(_Shape):
    replicatedJobs: list[ReplicatedJob] = Field(min_length=1)


class JobSetTemplate(_Shape):
    spec: JobSetSpec


class TorchPolicy(_Shape):
    numProcPerNode: StrictInt | Literal["auto", "cpu", "gpu"] = "auto"

    @field_validator("numProcPerNode", mode="before")
    @classmethod
    def _int_or_string(cls, value: object) -> object:
        # An IntOrString: "4" means 4; null means unset.
        if value is None:
            return "auto"
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, bool):
            raise ValueError(
                f"must be a positive int or one of {constants.NPROC_POLICIES}, got {value!r}"
            )
        return value

    @field_validator("numProcPerNode")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value


class MLPolicy(_Shape):
    numNodes: int = Field(default=1, ge=1, strict=True)
    torch: TorchPolicy | None = None
    mpi: dict[str, object] | None = None


class Metadata(_Shape):
    name: str = Field(pattern=RUNTIME_NAME_PATTERN, max_length=253)
    labels: dict[str, str] = Field(default_factory=dict)


class RuntimeDocumentSpec(_Shape):
    mlPolicy: MLPolicy = Field(default_factory=MLPolicy)
    template: JobSetTemplate


class RuntimeDocument(_Shape):
    """One ``ClusterTrainingRuntime`` or ``TrainingRuntime`` document."""

    apiVersion: Literal["trainer.kubeflow.org/v1alpha1"]
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"]
    metadata: Metadata
    spec: RuntimeDocumentSpec

    def node_container(self) -> Container:
        """The container of the ``node`` replicated job (named ``node``, else its first)."""
        job = next(j for j in self.spec.template.spec.replicatedJobs if j.name == constants.NODE)
        containers = job.template.spec.template.spec.containers
        return next((c for c in containers if c.name == constants.NODE), containers[0])

    @field_validator("spec")
    @classmethod
    def _has_node_job(cls, spec: RuntimeDocumentSpec) -> RuntimeDocumentSpec:
        names = [job.name for job in spec.template.spec.replicatedJobs]
        if constants.NODE not in names:
            raise ValueError(
                f"no replicated job named {constants.NODE!r} (the training nodes); found {names}"
            )
        return spec
