"""A Kubernetes cluster in miniature for tests: a real HTTPS API server, Trainer on Docker.

`MiniCluster` serves the Kubernetes REST API on https://127.0.0.1:<port> (self-signed CA,
bearer token, generated kubeconfig), so the official `kubernetes` client talks to it through
the same code path as to a real cluster. A background operator plays Kubeflow Trainer
(@8c0f505), JobSet, the Job controller, the scheduler, the garbage collector and the kubelet:
each TrainJob becomes indexed pods, and each pod runs as Docker containers (a sandbox holding
the pod's network, hostname and DNS names, plus one container per attempt).
`minicluster.testing` has client-side helpers (`Kube`, `trainjob`, `wait_for`, ...).

Modules: `cluster` (the facade), `api` / `discovery` / `httpserver` / `tls` (the server),
`store` / `registry` / `schema` / `cel` / `webhooks` / `selectors` / `patches` / `errors`
(API semantics), `jobs` / `trainer` / `trainjobstatus` (controllers), `scheduler` / `kubelet`
/ `podruntime` / `podstatus` / `podconfig` / `dockerops` / `logs` (the node), `events`,
`operator` (the loop), `util`.

Behaviour taken from the upstream sources where it is not obvious:
- A TrainJob naming a missing ClusterTrainingRuntime is refused by Trainer's validating
  webhook: 403 Forbidden, `admission webhook "validator.trainjob.trainer.kubeflow.org" denied
  the request: spec.RuntimeRef: Invalid value: v1alpha1.RuntimeRef{...}: ClusterTrainingRuntime
  .trainer.kubeflow.org "x" not found: specified clusterTrainingRuntime must be created before
  the TrainJob is created`. Reserved `PET_*` env and bad runtime patches are refused likewise.
- Schema errors are the apiextensions server's (`FieldValueTypeInvalid` for wrong types, and,
  as there, a type error adds `<nil>: Invalid value: "null": some validation rules were not
  checked ...` since the CEL rules cannot run). Unknown fields are pruned with a `Warning`
  header (`fieldValidation=Strict`: 400). Namespace missing: 404 on create only (reads 404 the
  object, lists are empty), as NamespaceLifecycle does.
- TrainJob conditions are JobSet's: `Complete` (reason `AllJobsCompleted`, "jobset completed
  successfully"), `Failed` (reason `FailedJobs`, "jobset failed due to one or more job
  failures (first failed job: <job>-node-0)"); Trainer's own `Suspended` (`Suspended` /
  `Resumed`) and `Failed` / `DeadlineExceeded`.
- Pod labels: the runtime's and runtime patches' pod-template labels plus JobSet's and the Job
  controller's; JobSet-level (`trainingRuntimeSpec.template.metadata`) labels stay on the
  JobSet, as upstream. Pods are owned by the Job `<job>-node-0` (which JobSet owns).
- `PET_MASTER_PORT` is 29500 (`constants.ContainerTrainerPort`); `PET_NPROC_PER_NODE` is
  `numProcPerNode`, else "auto" resolved to the node's CPU count (kept "auto" with GPUs).
- Failures follow `restartPolicy` (JobSet's default OnFailure: in-place restarts with
  CrashLoopBackOff) and the Job's `backoffLimit` (default 6). Past it, the Job deletes its
  other pods with their grace period (default 30 s; runtime patches may set it) and fails.
  `install_default_runtime(backoff_limit=0, restart_policy="Never")` gives fail-fast jobs
  whose failed pod stays readable.
- Events as each component records them: kubelet and job-controller with the legacy recorder
  (`source`, `count`), scheduler / JobSet / Trainer through events.k8s.io (`eventTime`).

Not modelled: watches, server-side apply and managedFields, ConfigMaps / Secrets / PVCs (pods
needing them wait with the kubelet's error), init and sidecar containers, replicated jobs other
than the trainer's `node` job, the service-account token volume, namespace deletion, writes to
pods other than delete.
"""

from .cluster import TEST_IMAGE, MiniCluster

__all__ = ["TEST_IMAGE", "MiniCluster"]
