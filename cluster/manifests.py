"""Manifests and configs of the local test cluster (scripts/test-cluster.sh).

Renders the upstream manifests shipped in the Go module cache the way their kustomizations
would (CRDs, RBAC, webhook configurations; no Deployments, Services or Secrets: the controllers
run as local processes), points every webhook at https://127.0.0.1:<port> with our CA as its
caBundle, and applies them with the official Python client (server-side apply).

    python3 cluster/manifests.py STATE_DIR COMMAND...      (run in the order given)

    configs   trainer.yaml and jobset.yaml (the controller managers' configs) in STATE_DIR
    render    print the manifests as YAML
    apply     apply them, wait until the CRDs are Established
    tokens    trainer.kubeconfig and jobset.kubeconfig: their ServiceAccounts' tokens
    check     both webhooks answer through the API server (dry-run creates)
    runtimes  the upstream ClusterTrainingRuntimes

STATE_DIR holds env (ports and paths written by scripts/test-cluster.sh), ca.crt and the admin
kubeconfig. Only PyYAML and kubernetes are needed.
"""

from __future__ import annotations

import base64
import copy
import sys
import time
from pathlib import Path
from typing import Any

import yaml

# libyaml's loader where PyYAML has it: the CRDs are large (3 s with the pure-Python one)
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

TRAINER_NAMESPACE = "kubeflow-system"
JOBSET_NAMESPACE = "jobset-system"
JOBSET_NAME_PREFIX = "jobset-"
NAMESPACED_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Service"}
FIELD_MANAGER = "prefect-kubeflow-test-cluster"
DEFAULT_RUNTIME_IMAGE = "localhost/prefect-kubeflow-test:debian12-torch1.13"


def read_env(state: Path) -> dict[str, str]:
    env = {}
    for line in (state / "env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.load_all(handle, Loader=Loader) if doc]


def kustomization_resources(directory: Path) -> list[dict[str, Any]]:
    """The plain resources a kustomization lists (files, and sub-kustomizations recursively)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = directory / res
        docs += kustomization_resources(path) if path.is_dir() else load_all(path)
    return docs


# --- JSON 6902 patches and strategic merges, as far as these manifests use them -------------


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] in ("add", "replace"):
            if isinstance(node, list) and op["op"] == "add":
                node.insert(len(node) if key == "-" else key, copy.deepcopy(op["value"]))
            else:
                node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[key]
        else:
            raise ValueError(f"unsupported patch op {op['op']}")


def merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def apply_kustomize_patches(directory: Path, docs: list[dict[str, Any]]) -> None:
    """The `patches:` of a kustomization: JSON 6902 with a target, or strategic merge by name."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for patch in kust.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        target = patch.get("target")
        if target:
            for doc in docs:
                if doc["kind"] == target["kind"] and target.get("name") in (
                    None,
                    doc["metadata"]["name"],
                ):
                    json6902(doc, body)
        else:
            for doc in docs:
                if (
                    doc["kind"] == body["kind"]
                    and doc["metadata"]["name"] == body["metadata"]["name"]
                ):
                    merge(doc, body)


# --- webhooks -------------------------------------------------------------------------------


def point_at(client_config: dict[str, Any], port: str, ca_bundle: str) -> None:
    """Replace an in-cluster Service reference by a loopback URL and our CA."""
    service = client_config.pop("service")
    client_config["url"] = f"https://127.0.0.1:{port}{service.get('path', '/')}"
    client_config["caBundle"] = ca_bundle


def rewrite_webhooks(docs: list[dict[str, Any]], port: str, ca_bundle: str) -> None:
    for doc in docs:
        if doc["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            for hook in doc["webhooks"]:
                point_at(hook["clientConfig"], port, ca_bundle)
        elif doc["kind"] == "CustomResourceDefinition":
            conversion = doc["spec"].get("conversion") or {}
            if conversion.get("strategy") == "Webhook":
                point_at(conversion["webhook"]["clientConfig"], port, ca_bundle)


# --- the two projects -----------------------------------------------------------------------


def set_namespace(docs: list[dict[str, Any]], namespace: str) -> None:
    for doc in docs:
        if doc["kind"] in NAMESPACED_KINDS:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace


def trainer_manifests(env: dict[str, str], ca_bundle: str) -> list[dict[str, Any]]:
    """manifests/overlays/manager without the Deployment, Service and JobSet."""
    base = Path(env["TRAINER_DIR"]) / "manifests"
    overlay = yaml.safe_load((base / "overlays/manager/kustomization.yaml").read_text())
    namespace = overlay["namespace"]
    docs = load_all(base / "overlays/manager/namespace.yaml")
    docs += kustomization_resources(base / "base/crds")
    rbac = kustomization_resources(base / "base/rbac")
    set_namespace(rbac, namespace)
    docs += rbac
    for gen in overlay.get("configMapGenerator", []):  # kubeflow-trainer-public for the SDK
        data = dict(lit.split("=", 1) for lit in gen.get("literals", []))
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"], "namespace": namespace},
                "data": data,
            }
        )
    pki = Path(env["STATE_DIR"]) / "pki"
    for gen in overlay.get("secretGenerator", []):  # kubeflow-trainer-webhook-cert
        # as Trainer's certificate rotator would fill it: with TrainJobStatus on, Trainer copies
        # its ca.crt into each TrainJob's <name>-tls-config ConfigMap for the status server
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": gen["name"], "namespace": namespace},
                "data": {
                    key: base64.b64encode((pki / path).read_bytes()).decode()
                    for key, path in (
                        ("ca.crt", "ca.crt"),
                        ("tls.crt", "trainer/tls.crt"),
                        ("tls.key", "trainer/tls.key"),
                    )
                },
            }
        )
    hooks = kustomization_resources(base / "base/webhook")
    apply_kustomize_patches(base / "base/webhook", hooks)
    rewrite_webhooks(hooks, env["TRAINER_WEBHOOK_PORT"], ca_bundle)
    return docs + hooks


def jobset_manifests(env: dict[str, str], ca_bundle: str) -> list[dict[str, Any]]:
    """config/default without the Deployment, Services and Secret (namePrefix jobset-)."""
    base = Path(env["JOBSET_DIR"]) / "config"
    default = yaml.safe_load((base / "default/kustomization.yaml").read_text())
    namespace, prefix = default["namespace"], default["namePrefix"]
    labels = default.get("commonLabels", {})
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    crds = kustomization_resources(base / "components/crd")
    apply_kustomize_patches(base / "components/crd", crds)
    rbac = kustomization_resources(base / "components/rbac")
    hooks = kustomization_resources(base / "components/webhook")
    hooks = [d for d in hooks if d["kind"] != "Service"]
    apply_kustomize_patches(base / "components/webhook", hooks)
    for doc in rbac + hooks:  # namePrefix, and the references it renames
        doc["metadata"]["name"] = prefix + doc["metadata"]["name"]
        if "roleRef" in doc:
            doc["roleRef"]["name"] = prefix + doc["roleRef"]["name"]
        for subject in doc.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["name"] = prefix + subject["name"]
    set_namespace(rbac, namespace)
    rewrite_webhooks(crds + hooks, env["JOBSET_WEBHOOK_PORT"], ca_bundle)
    for doc in crds:  # cert-manager's CA injection: we set caBundle ourselves
        doc["metadata"].get("annotations", {}).pop("cert-manager.io/inject-ca-from", None)
    for doc in crds + rbac + hooks:
        doc["metadata"].setdefault("labels", {}).update(labels)
    return docs + crds + rbac + hooks


def render(state: Path) -> list[dict[str, Any]]:
    env = read_env(state)
    ca_bundle = base64.b64encode((state / "pki/ca.crt").read_bytes()).decode()
    return trainer_manifests(env, ca_bundle) + jobset_manifests(env, ca_bundle)


def runtimes(state: Path) -> list[dict[str, Any]]:
    """manifests/overlays/runtimes: every image mapped to the project's test image."""
    env = read_env(state)
    base = Path(env["TRAINER_DIR"]) / "manifests"
    overlay = yaml.safe_load((base / "overlays/runtimes/kustomization.yaml").read_text())
    image = env.get("RUNTIME_IMAGE") or DEFAULT_RUNTIME_IMAGE
    docs = kustomization_resources(base / "overlays/runtimes")
    for doc in docs:
        for label in overlay.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
        for job in doc["spec"]["template"]["spec"].get("replicatedJobs", []):
            pod = job["template"]["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                if "image" in container:
                    container["image"] = image
    return docs


# --- configs of the two controller managers ---------------------------------------------------


def configs(state: Path) -> None:
    env = read_env(state)
    trainer = yaml.safe_load(
        (
            Path(env["TRAINER_DIR"]) / "manifests/base/manager/controller_manager_config.yaml"
        ).read_text()
    )
    trainer["health"]["healthProbeBindAddress"] = f"127.0.0.1:{env['TRAINER_HEALTH_PORT']}"
    trainer["metrics"] = {"bindAddress": "0"}  # no metrics server
    trainer["webhook"] = {"port": int(env["TRAINER_WEBHOOK_PORT"]), "host": "127.0.0.1"}
    trainer["leaderElection"]["leaderElect"] = False
    trainer["certManagement"]["enable"] = False  # certificates come from scripts/test-cluster.sh
    trainer["statusServer"]["port"] = int(env["TRAINER_STATUS_PORT"])
    trainer["featureGates"] = {"TrainJobStatus": True}
    (state / "trainer.yaml").write_text(yaml.safe_dump(trainer, sort_keys=False))

    jobset = yaml.safe_load(
        (
            Path(env["JOBSET_DIR"]) / "config/components/manager/controller_manager_config.yaml"
        ).read_text()
    )
    certs = str(state / "pki/jobset")
    jobset["leaderElection"] = {"leaderElect": False}
    jobset["internalCertManagement"] = {"enable": False}
    jobset["webhook"] = {
        "port": int(env["JOBSET_WEBHOOK_PORT"]),
        "host": "127.0.0.1",
        "certDir": certs,
    }
    jobset["metrics"] = {"bindAddress": "0", "certDir": certs}
    jobset["health"] = {"healthProbeBindAddress": f"127.0.0.1:{env['JOBSET_HEALTH_PORT']}"}
    (state / "jobset.yaml").write_text(yaml.safe_dump(jobset, sort_keys=False))


# --- applying ---------------------------------------------------------------------------------


def _client(state: Path):
    from kubernetes import config, dynamic

    api = config.new_client_from_config(config_file=str(state / "admin.kubeconfig"))
    return api, dynamic.DynamicClient(api, cache_file=str(state / "discovery.json"))


def apply(state: Path, docs: list[dict[str, Any]]) -> None:
    api, client = _client(state)
    order = {"Namespace": 0, "CustomResourceDefinition": 1}
    crds = []
    for doc in sorted(docs, key=lambda d: order.get(d["kind"], 2)):
        resource = client.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        for attempt in range(60):
            try:
                resource.server_side_apply(
                    body=doc,
                    name=doc["metadata"]["name"],
                    namespace=doc["metadata"].get("namespace"),
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True,
                )
                break
            except Exception as err:  # the API may still be settling (RBAC, webhooks starting)
                if attempt == 59:
                    raise
                if attempt == 0:
                    print(
                        f"retrying {doc['kind']} {doc['metadata']['name']}: {err}", file=sys.stderr
                    )
                time.sleep(0.5)
        if doc["kind"] == "CustomResourceDefinition":
            crds.append((resource, doc["metadata"]["name"]))
    for resource, name in crds:
        wait_established(resource, name)
    api.close()


def wait_established(resource: Any, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        crd = resource.get(name=name).to_dict()
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRD {name} not Established after {timeout} s")
        time.sleep(0.2)


CONTROLLER_ACCOUNTS = {
    "trainer": (TRAINER_NAMESPACE, "kubeflow-trainer-controller-manager"),
    "jobset": (JOBSET_NAMESPACE, JOBSET_NAME_PREFIX + "controller-manager"),
}


def tokens(state: Path, seconds: int = 7 * 86400) -> None:
    """STATE_DIR/<name>.kubeconfig for each controller: a token of its upstream ServiceAccount."""
    from kubernetes import client as k8s

    env = read_env(state)
    api, _ = _client(state)
    core = k8s.CoreV1Api(api)
    for name, (namespace, account) in CONTROLLER_ACCOUNTS.items():
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
        )
        token = core.create_namespaced_service_account_token(
            account, namespace, request
        ).status.token
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "prefect-kubeflow-test",
                    "cluster": {
                        "server": f"https://127.0.0.1:{env['API_PORT']}",
                        "certificate-authority": str(state / "pki/ca.crt"),
                    },
                }
            ],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "prefect-kubeflow-test",
                    "context": {
                        "cluster": "prefect-kubeflow-test",
                        "user": account,
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "prefect-kubeflow-test",
        }
        path = state / f"{name}.kubeconfig"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        # what a pod of this account finds in /var/run/secrets/kubernetes.io/serviceaccount
        sa_dir = state / f"{name}-serviceaccount"
        sa_dir.mkdir(mode=0o700, exist_ok=True)
        (sa_dir / "token").write_text(token)
        (sa_dir / "namespace").write_text(namespace)
        (sa_dir / "ca.crt").write_bytes((state / "pki/ca.crt").read_bytes())
    api.close()


def check(state: Path, timeout: float = 60) -> None:
    """Dry-run creates through the API server: a JobSet passes JobSet's webhooks, a TrainJob
    naming a runtime that does not exist is refused by Trainer's validating webhook."""
    from kubernetes.client.exceptions import ApiException

    api, client = _client(state)
    jobsets = client.resources.get(api_version="jobset.x-k8s.io/v1alpha2", kind="JobSet")
    trainjobs = client.resources.get(api_version="trainer.kubeflow.org/v1alpha1", kind="TrainJob")
    pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": DEFAULT_RUNTIME_IMAGE}]}
    jobset = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "webhook-check"},
        "spec": {
            "replicatedJobs": [{"name": "w", "template": {"spec": {"template": {"spec": pod}}}}]
        },
    }
    trainjob = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "webhook-check"},
        "spec": {"runtimeRef": {"name": "no-such-runtime-webhook-check"}},
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            jobsets.create(body=jobset, namespace="default", dry_run="All")
            try:
                trainjobs.create(body=trainjob, namespace="default", dry_run="All")
                raise RuntimeError("Trainer's webhook let a TrainJob naming no runtime through")
            except ApiException as err:
                if "validator.trainjob.trainer.kubeflow.org" not in str(err.body):
                    raise
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    api.close()


COMMANDS = ("configs", "render", "apply", "tokens", "check", "runtimes")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or any(command not in COMMANDS for command in argv[2:]):
        print(__doc__, file=sys.stderr)
        return 2
    state = Path(argv[1])
    for command in argv[2:]:
        if command == "configs":
            configs(state)
        elif command == "render":
            yaml.safe_dump_all(render(state), sys.stdout, sort_keys=False)
        elif command == "apply":
            apply(state, render(state))
        elif command == "tokens":
            tokens(state)
        elif command == "check":
            check(state)
        else:
            apply(state, runtimes(state))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
