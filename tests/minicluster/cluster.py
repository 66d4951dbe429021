"""`MiniCluster`: an HTTPS Kubernetes API server plus a Kubeflow Trainer operator on Docker."""

from __future__ import annotations

import functools
import secrets
import string
import time
from pathlib import Path
from typing import Any

import docker
import yaml

from . import errors as E
from .api import ApiHandler
from .dockerops import LABEL, DockerOps
from .httpserver import ApiServer
from .logs import LogService
from .operator import Operator
from .podstatus import Node
from .registry import Registry
from .store import Store
from .tls import kubeconfig, make_certificates
from .util import deep, dig, new_uid, rfc3339

TEST_IMAGE = "localhost/prefect-kubeflow-test:debian12-torch1.13"
DATA = Path(__file__).resolve().parent.parent / "data" / "k8s"
USER = "system:serviceaccount:default:prefect"
CRD_FILES = (
    "trainer.kubeflow.org_trainjobs.yaml",
    "trainer.kubeflow.org_clustertrainingruntimes.yaml",
)


@functools.cache
def _parsed(name: str) -> dict[str, Any]:
    with (DATA / name).open() as handle:
        return yaml.safe_load(handle)


def load_yaml(name: str) -> dict[str, Any]:
    """A manifest from tests/data/k8s (`yaml.safe_load`, parsed once per process)."""
    return deep(_parsed(name))


class MiniCluster:
    """A cluster in miniature: see the package docstring for what it mirrors.

    Usage::

        with MiniCluster(tmp_path) as cluster:
            cluster.install_crds()
            cluster.install_default_runtime()
            api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
            kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(...)
    """

    def __init__(
        self,
        workdir: Path,
        image: str = TEST_IMAGE,
        docker_host: str | None = None,
        node_cpus: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.image = image
        # The one node's advertised CPUs (the scheduler's capacity); Docker's limits still hold.
        self.node_cpus = node_cpus
        alphabet = string.ascii_lowercase + string.digits
        self.id = "".join(secrets.choice(alphabet) for _ in range(6))
        self.token = secrets.token_urlsafe(32)
        self.docker = (
            docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        )
        self.store = Store()
        self.registry = Registry(self.store)
        self.ops = DockerOps(self.docker, self.id, image)
        self.logs = LogService(self.store, self.docker)
        self._api: ApiHandler | None = None
        self._server: ApiServer | None = None
        self._operator: Operator | None = None
        self._kubeconfig: dict[str, Any] = {}
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> MiniCluster:
        """Serve the API and run the operator; namespaces exist, CRDs do not."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs = make_certificates(self.workdir / "pki")
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.add_namespace(name)
        info = self.docker.info()
        node_name = f"minicluster-{self.id}"
        node = Node(
            node_name,
            (self.node_cpus or int(info["NCPU"])) * 1000,
            int(info["MemTotal"]),
            {
                "kubernetes.io/hostname": node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            },
        )
        self._api = ApiHandler(self.store, self.token, USER, self.logs, "")
        self._server = ApiServer(self._api, str(certs.cert_file), str(certs.key_file))
        self._api.url = self.url
        self._kubeconfig = kubeconfig(self.url, certs.ca_pem, self.token, "prefect")
        self.kubeconfig_path.write_text(yaml.safe_dump(self._kubeconfig, sort_keys=False))
        self._operator = Operator(self.store, self.ops, node, self.workdir)
        self._operator.start()
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving (cutting open streams), stop the operator, remove containers/networks."""
        if self._stopped:
            return
        self._stopped = True
        self.ops.closed = True
        self.logs.close_all()
        if self._server is not None:
            self._server.stop()
        if self._operator is not None:
            self._operator.stop()
        self.ops.cleanup()
        time.sleep(0.2)  # a creation already in flight removes what it made; sweep once more
        self.ops.cleanup()

    def pause_operator(self) -> None:
        """Stop reconciling: objects stored from now on stay as they are (a benchmark stores
        a thousand TrainJobs and their pods, which could not all run here)."""
        if self._operator is not None:
            self._operator.stop()

    def add_trainjob(self, body: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        """Store a TrainJob as the API server would after admitting it, without the schema
        validation that costs ~0.5 s per object (a benchmark stores a thousand)."""
        obj = deep(body)
        obj["metadata"].update(
            namespace=namespace, uid=new_uid(), creationTimestamp=rfc3339(), generation=1
        )
        return self.store.put("trainjobs", obj)

    def add_finished_pod(
        self, trainjob: dict[str, Any], index: int, namespace: str = "default"
    ) -> dict[str, Any]:
        """Store the Succeeded pod of node `index` of `trainjob` as the Job controller and the
        kubelet leave one (its labels, its command, a terminated container)."""
        job = trainjob["metadata"]["name"]
        pod_labels = dig(
            trainjob,
            "spec", "runtimePatches", 0, "trainingRuntimeSpec", "template", "spec",
            "replicatedJobs", 0, "template", "spec", "template", "metadata", "labels",
            default={},
        )  # fmt: skip
        suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
        stamp = rfc3339()
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job}-node-0-{index}-{suffix}",
                "namespace": namespace,
                "uid": new_uid(),
                "creationTimestamp": stamp,
                "labels": {
                    **pod_labels,
                    "jobset.sigs.k8s.io/jobset-name": job,
                    "jobset.sigs.k8s.io/replicatedjob-name": "node",
                    "jobset.sigs.k8s.io/job-index": "0",
                    "batch.kubernetes.io/job-completion-index": str(index),
                    "batch.kubernetes.io/job-name": f"{job}-node-0",
                },
            },
            "spec": {
                "containers": [
                    {
                        "name": "node",
                        "image": self.image,
                        "command": dig(trainjob, "spec", "trainer", "command", default=[]),
                        "env": dig(trainjob, "spec", "trainer", "env", default=[]),
                    }
                ],
                "restartPolicy": "Never",
                "hostname": f"{job}-node-0-{index}",
                "subdomain": job,
            },
            "status": {
                "phase": "Succeeded",
                "startTime": stamp,
                "containerStatuses": [
                    {
                        "name": "node",
                        "image": self.image,
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": 0,
                                "reason": "Completed",
                                "startedAt": stamp,
                                "finishedAt": stamp,
                            }
                        },
                    }
                ],
            },
        }
        return self.store.put("pods", pod)

    def __enter__(self) -> MiniCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connection --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """`https://127.0.0.1:<port>`."""
        assert self._server is not None, "start() the cluster first"
        return f"https://127.0.0.1:{self._server.port}"

    @property
    def kubeconfig_path(self) -> Path:
        """The kubeconfig file (context `minicluster`)."""
        return self.workdir / "kubeconfig"

    @property
    def kubeconfig_dict(self) -> dict[str, Any]:
        """The kubeconfig as a dict."""
        return deep(self._kubeconfig)

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, path, query) of every request received so far."""
        return list(self._api.requests) if self._api else []

    @property
    def operator_errors(self) -> list[str]:
        """Tracebacks of operator failures (a bug in the fixture; should stay empty)."""
        return list(self._operator.errors) if self._operator else []

    # -- administration ----------------------------------------------------------------------
    def create_namespace(self, name: str) -> dict[str, Any]:
        """Create a namespace (as an admin)."""
        return self.store.add_namespace(name)

    def install_crds(self) -> None:
        """Install the TrainJob and ClusterTrainingRuntime CRDs (established at once)."""
        for name in CRD_FILES:
            crd = load_yaml(name)
            crd["metadata"].update(uid=new_uid(), creationTimestamp=rfc3339(), generation=1)
            names = crd["spec"]["names"]
            crd["status"] = {
                "acceptedNames": names,
                "storedVersions": [crd["spec"]["versions"][0]["name"]],
                "conditions": [
                    {
                        "type": kind,
                        "status": "True",
                        "lastTransitionTime": rfc3339(),
                        "reason": reason,
                        "message": message,
                    }
                    for kind, reason, message in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        (
                            "Established",
                            "InitialNamesAccepted",
                            "the initial names have been accepted",
                        ),
                    )
                ],
            }
            self.store.put("customresourcedefinitions", crd)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a custom object such as a ClusterTrainingRuntime (admin)."""
        found = next(
            (
                (r, s)
                for r, s in self.store.custom_resources()
                if r.kind == obj.get("kind") and r.api_version == obj.get("apiVersion")
            ),
            None,
        )
        if found is None:
            raise E.unknown_resource()
        res, schema = found
        namespace = dig(obj, "metadata", "namespace", default="default") if res.namespaced else ""
        old = self.store.get(res.plural, namespace, obj["metadata"]["name"])
        if old is None:
            return self.registry.create(res, schema, namespace, obj)[0]
        new = deep(obj)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self.registry.update(res, schema, old, new)[0]

    def delete_object(self, resource: str, name: str, namespace: str | None = None) -> None:
        """Delete an object as an admin (background propagation)."""
        found = self.store.resource(resource)
        if found is None:
            raise E.unknown_resource()
        res = found[0]
        self.registry.delete(res, namespace or "default", name, {})

    def install_default_runtime(
        self,
        name: str = "torch-distributed",
        host_shared_dir: Path | None = None,
        *,
        backoff_limit: int | None = None,
        restart_policy: str | None = None,
    ) -> dict[str, Any]:
        """The real torch-distributed runtime with its image replaced by `image`.

        `host_shared_dir` adds a hostPath volume mounted at /shared in the node container;
        `backoff_limit` / `restart_policy` patch the node Job / pod template, as an admin may
        (unset, the Job defaults apply: backoffLimit 6, JobSet's restartPolicy OnFailure).
        """
        runtime = load_yaml("runtime-torch-distributed.yaml")
        runtime["metadata"]["name"] = name
        job = next(
            j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node"
        )
        pod_spec = job["template"]["spec"]["template"]["spec"]
        node = next(c for c in pod_spec["containers"] if c["name"] == "node")
        node["image"] = self.image
        if host_shared_dir is not None:
            Path(host_shared_dir).mkdir(parents=True, exist_ok=True)
            pod_spec.setdefault("volumes", []).append(
                {
                    "name": "shared",
                    "hostPath": {"path": str(host_shared_dir), "type": "DirectoryOrCreate"},
                }
            )
            node.setdefault("volumeMounts", []).append({"name": "shared", "mountPath": "/shared"})
        if backoff_limit is not None:
            job["template"]["spec"]["backoffLimit"] = backoff_limit
        if restart_policy is not None:
            pod_spec["restartPolicy"] = restart_policy
        return self.apply(runtime)

    def forbid(self, verb: str, resource: str) -> None:
        """RBAC: `verb` on `resource` (e.g. `pods/log`) answers 403 from now on."""
        assert self._api is not None
        self._api.forbidden.add((verb, resource))

    def allow_all(self) -> None:
        """Undo every `forbid`."""
        assert self._api is not None
        self._api.forbidden.clear()

    def cut_log_streams(self, after_lines: int | None) -> None:
        """End each `follow=true` log stream abruptly after that many lines (None: off)."""
        self.logs.cut_after = after_lines

    # -- inspection ----------------------------------------------------------------------------
    def objects(self, resource: str, namespace: str = "default") -> list[dict[str, Any]]:
        """What is stored for a resource (namespace ignored for cluster-scoped ones)."""
        found = self.store.resource(resource)
        namespaced = found[0].namespaced if found else True
        return self.store.list_objects(resource, namespace if namespaced else None)

    def _label_filter(self, job: str | None) -> list[str]:
        labels = [f"{LABEL}={self.id}"]
        if job is not None:
            labels.append(f"{LABEL}.job={job}")
        return labels

    def containers(self, job: str | None = None, *, sandboxes: bool = False) -> list[Any]:
        """Docker containers of the pods (all states), optionally of one TrainJob.

        Pod sandboxes (`sleep infinity`, holding a pod's network) are left out unless asked
        for: they outlive a finished pod's container by 2 s, until its deletion at the latest.
        """
        labels = self._label_filter(job)
        if not sandboxes:
            labels.append(f"{LABEL}.role=container")
        return self.docker.containers.list(all=True, filters={"label": labels}, ignore_removed=True)

    def networks(self, job: str | None = None) -> list[Any]:
        """Docker networks the operator made, optionally for one TrainJob."""
        return self.docker.networks.list(filters={"label": self._label_filter(job)})

    def kill_pod_container(self, pod_name: str) -> None:
        """SIGKILL the pod's running container (as an OOM killer or a node problem would)."""
        assert self._operator is not None
        if not self._operator.kubelet.kill(pod_name):
            raise KeyError(f"no container for pod {pod_name}")
