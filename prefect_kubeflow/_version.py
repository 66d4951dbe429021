"""The package version, in a module of its own so that any part of the package can read it
without importing the package's lazily loaded names."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prefect-kubeflow")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.1.0"
