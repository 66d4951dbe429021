"""Prefect Blocks configuring prefect-kubeflow: saved, loaded and edited in the Prefect UI."""

from prefect_kubeflow.blocks.local import LocalProcessBackendConfig

__all__ = ["LocalProcessBackendConfig"]
