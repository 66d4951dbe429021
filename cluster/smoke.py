"""Smoke test of a cluster started by `scripts/test-cluster.sh up KUBECONFIG`.

    KUBECONFIG=/tmp/kc python3 cluster/smoke.py

Lists namespaces; creates a ClusterTrainingRuntime and a TrainJob naming it and waits for
Trainer's JobSet, JobSet's Jobs and the Jobs' pods (Pending: there is no node); checks that
Trainer's validating webhook refuses a TrainJob naming a runtime that does not exist; cleans up.
"""

from __future__ import annotations

import copy
import os
import sys
import time
import uuid

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

TRAINER = ("trainer.kubeflow.org", "v1alpha1")
JOBSET = ("jobset.x-k8s.io", "v1alpha2")
IMAGE = "localhost/prefect-kubeflow-test:debian12-torch1.13"

RUNTIME = yaml.safe_load(
    f"""
apiVersion: trainer.kubeflow.org/v1alpha1
kind: ClusterTrainingRuntime
metadata:
  name: smoke-torch
  labels:
    trainer.kubeflow.org/framework: torch
spec:
  mlPolicy:
    numNodes: 1
    torch:
      numProcPerNode: auto
  template:
    spec:
      replicatedJobs:
        - name: node
          template:
            metadata:
              labels:
                trainer.kubeflow.org/trainjob-ancestor-step: trainer
            spec:
              template:
                spec:
                  containers:
                    - name: node
                      image: {IMAGE}
                      command: [torchrun, /train.py]
"""
)


def wait(what: str, probe, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.5)


def main() -> int:
    api = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    core, batch, custom = (
        client.CoreV1Api(api),
        client.BatchV1Api(api),
        client.CustomObjectsApi(api),
    )
    ns = "default"
    print("namespaces:", sorted(n.metadata.name for n in core.list_namespace().items))

    runtime = copy.deepcopy(RUNTIME)
    custom.create_cluster_custom_object(*TRAINER, "clustertrainingruntimes", runtime)
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    trainjob = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name},
        "spec": {
            "runtimeRef": {"name": "smoke-torch", "kind": "ClusterTrainingRuntime"},
            "trainer": {"numNodes": 2},
        },
    }
    started = time.monotonic()
    try:
        custom.create_namespaced_custom_object(*TRAINER, ns, "trainjobs", trainjob)
        wait("JobSet", lambda: _get(custom, JOBSET, ns, "jobsets", name))
        print(f"JobSet {name} after {time.monotonic() - started:.1f} s")
        selector = f"jobset.sigs.k8s.io/jobset-name={name}"
        jobs = wait("Jobs", lambda: batch.list_namespaced_job(ns, label_selector=selector).items)
        print(f"Jobs after {time.monotonic() - started:.1f} s:", [j.metadata.name for j in jobs])

        def two_pods():
            pods = core.list_namespaced_pod(ns, label_selector=selector).items
            return pods if len(pods) >= 2 else None

        pods = wait("2 pods", two_pods)
        phases = [(p.metadata.name, p.status.phase) for p in pods]
        print(f"pods after {time.monotonic() - started:.1f} s:", phases)
        env = {e.name: e.value for e in pods[0].spec.containers[0].env or []}
        print("node env:", {k: v for k, v in env.items() if k.startswith("PET_")})

        bad = copy.deepcopy(trainjob)
        bad["metadata"]["name"] = name + "-bad"
        bad["spec"]["runtimeRef"]["name"] = "no-such-runtime"
        try:
            custom.create_namespaced_custom_object(*TRAINER, ns, "trainjobs", bad)
            print("FAIL: a TrainJob naming a missing runtime was accepted")
            return 1
        except ApiException as err:
            print(f"refused ({err.status}):", str(err.body)[:300])
    finally:
        _delete(lambda: custom.delete_namespaced_custom_object(*TRAINER, ns, "trainjobs", name))
        _delete(
            lambda: custom.delete_cluster_custom_object(
                *TRAINER, "clustertrainingruntimes", "smoke-torch"
            )
        )
    print("OK")
    return 0


def _get(custom, gv, ns, plural, name):
    try:
        return custom.get_namespaced_custom_object(*gv, ns, plural, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _delete(call) -> None:
    try:
        call()
    except ApiException as err:
        if err.status != 404:
            raise


if __name__ == "__main__":
    sys.exit(main())
