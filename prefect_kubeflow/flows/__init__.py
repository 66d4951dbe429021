"""The Prefect side: the ``trainjob`` flow, its ``node-<i>`` tasks, log forwarding, the link
between a job and its flow run, and the detached supervisor that runs a job's flow outside the
caller's process.

Importing this package does not import Prefect: its modules do, when they are used.
"""
