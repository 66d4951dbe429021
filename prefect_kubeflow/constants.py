"""Constants shared with the Kubeflow SDK (``kubeflow.trainer.constants``).

``from prefect_kubeflow.constants import constants`` works as in the Kubeflow SDK:
``constants`` is this module itself.
"""

import sys

# TrainJob statuses, as in the Kubeflow SDK.
TRAINJOB_CREATED = "Created"
TRAINJOB_RUNNING = "Running"
TRAINJOB_COMPLETE = "Complete"
TRAINJOB_FAILED = "Failed"
TRAINJOB_STATUSES = frozenset(
    {TRAINJOB_CREATED, TRAINJOB_RUNNING, TRAINJOB_COMPLETE, TRAINJOB_FAILED}
)

# Step (node) statuses, named after Kubernetes pod phases as in the Kubeflow SDK.
STEP_PENDING = "Pending"
STEP_RUNNING = "Running"
STEP_SUCCEEDED = "Succeeded"
STEP_FAILED = "Failed"
POD_SUCCEEDED = STEP_SUCCEEDED
POD_PENDING = STEP_PENDING

UNKNOWN = "Unknown"

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# The name of the ReplicatedJob and container of a training node; step names are "node-<i>".
NODE = "node"
RUNTIME_FRAMEWORK_LABEL = "trainer.kubeflow.org/framework"
TRAINJOB_ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"

DEFAULT_TRAINING_RUNTIME = "torch-distributed"
# numProcPerNode: a positive int or one of these policies.
NPROC_POLICIES = ("auto", "cpu", "gpu")
DEFAULT_PIP_INDEX_URLS = ("https://pypi.org/simple",)
# Pinned by tag and digest (the multi-platform index's), as the built-in runtime's image: a
# tag can be moved, a digest cannot.
DEFAULT_TORCH_IMAGE = (
    "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime"
    "@sha256:c16f4c749e2d9e96878875cdf6cc45cddda1d1a36fddd371dd6f2360f1b6e2a2"
)
DEFAULT_FRAMEWORK_IMAGES = {"torch": DEFAULT_TORCH_IMAGE}

# Job names: one random letter plus this many hex characters (as the Kubeflow SDK).
JOB_NAME_UUID_LENGTH = 11

# Resource keys accepted in ``resources_per_node``.
CPU_LABEL = "cpu"
MEMORY_LABEL = "memory"
GPU_LABEL = "nvidia.com/gpu"
RESOURCE_KEYS = frozenset({CPU_LABEL, MEMORY_LABEL, "gpu", GPU_LABEL})

# Labels and annotations on what the backends create (Kubeflow's names where it has one).
TRAINJOB_NAME_LABEL = "trainer.kubeflow.org/trainjob-name"
LABEL_PREFIX = "prefect-kubeflow.io/"
BACKEND_VERSION_LABEL = LABEL_PREFIX + "backend-version"
JOB_RECORD_KEY = LABEL_PREFIX + "job"  # the JobRecord: what get_job shows the engine does not know

# The folder name under the user's data and cache folders.
APP_NAME = "prefect-kubeflow"

# Tags on every TrainJob flow run, so the Prefect UI can filter them.
FLOW_RUN_TAG = "prefect-kubeflow"

constants = sys.modules[__name__]
