"""The node agent: the one part of the test cluster we write, standing in for the kubelet.

It registers a Node with this machine's CPUs and memory and renews its Lease, runs every pod
the real kube-scheduler binds to it as Docker containers (a sandbox holding the pod's network,
hostname and DNS names, plus one container per attempt), writes pod status through the API
(phases, container states, exit codes, termination messages, restart counts), and serves the
kubelet endpoint the API server reads pod logs from. Run it with `python -m nodeagent`.
"""
