"""The Prefect side: the ``trainjob`` flow, its ``node-<i>`` tasks, log forwarding, and the
detached supervisor that runs a job outside the caller's process.

Importing this package does not import Prefect: the supervisor starts the nodes first.
"""
