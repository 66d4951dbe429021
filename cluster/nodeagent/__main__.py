"""`python -m nodeagent --kubeconfig K --node-name N --workdir W --tls-cert C --tls-key K`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .agent import Agent, Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="nodeagent", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", default="pk-node-0")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--sandbox-image", required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--client-ca", required=True, help="CA of the API server's client cert")
    parser.add_argument(
        "--host-alias",
        action="append",
        default=[],
        help="a name every pod resolves to this machine (a Service of a process running here)",
    )
    parser.add_argument(
        "--cpus", type=int, default=None, help="CPUs the Node advertises (default: this machine's)"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubelet-version", default="v1.37.2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    Agent(
        Settings(
            kubeconfig=args.kubeconfig,
            node_name=args.node_name,
            workdir=args.workdir,
            sandbox_image=args.sandbox_image,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            client_ca=args.client_ca,
            host_aliases=args.host_alias,
            port=args.port,
            cpus=args.cpus,
            kubelet_version=args.kubelet_version,
        )
    ).run()


if __name__ == "__main__":
    main()
