"""Kubernetes backend: each job is a Kubeflow Trainer ``TrainJob`` on a cluster.

`trainjob.py` builds the TrainJob body and reads pods back (pure), `bootstrap.py` is the
program every node's container runs, `api.py` is the one boundary to the Kubernetes client,
`podlogs.py` follows a pod's log across interruptions, and `backend.py` implements `Backend`.
"""
