"""Training runtimes: Kubeflow ``ClusterTrainingRuntime``/``TrainingRuntime`` YAML read from
GitHub, HTTPS, files and folders, cached, merged with the runtimes built into the package."""

from prefect_kubeflow.runtimes.catalog import (
    CatalogListing,
    RuntimeCatalog,
    builtin_runtimes,
)
from prefect_kubeflow.runtimes.http import HttpSettings
from prefect_kubeflow.runtimes.parsing import RuntimeSpec, parse_runtimes
from prefect_kubeflow.runtimes.sources import parse_source

__all__ = [
    "CatalogListing",
    "HttpSettings",
    "RuntimeCatalog",
    "RuntimeSpec",
    "builtin_runtimes",
    "parse_runtimes",
    "parse_source",
]
