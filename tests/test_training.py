"""Real torchrun agents, real torch.distributed (gloo), a real Prefect API."""

import json

from conftest import read_task_run_logs, wait_supervisor_exit
from prefect.client.orchestration import get_client
from training_functions import ddp_all_reduce, print_env

from prefect_kubeflow import CustomTrainer
from prefect_kubeflow.constants import constants


def test_two_nodes_two_processes_all_reduce(client, jobs_dir):
    name = client.train(
        trainer=CustomTrainer(
            func=ddp_all_reduce,
            func_args={"marker": "total"},
            num_nodes=2,
            resources_per_node={"cpu": 2},
        )
    )
    job = client.wait_for_job_status(name, timeout=180, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE
    assert [(s.name, s.status, s.device_count) for s in job.steps] == [
        ("node-0", constants.STEP_SUCCEEDED, "2"),
        ("node-1", constants.STEP_SUCCEEDED, "2"),
    ]
    # Ranks 0..3 (node-0 has 0 and 1), each saw 1+2+3+4 = 10.
    by_node = {
        i: [line for line in client.get_job_logs(name, node_index=i) if "total=" in line]
        for i in (0, 1)
    }
    assert sorted(by_node[0]) == ["rank=0 world=4 total=10\n", "rank=1 world=4 total=10\n"]
    assert sorted(by_node[1]) == ["rank=2 world=4 total=10\n", "rank=3 world=4 total=10\n"]

    # The job is a flow run named after it, with one task run per node carrying its lines.
    wait_supervisor_exit(jobs_dir, name)
    flow_run_id = json.loads((jobs_dir / name / "flow_run.json").read_text())["id"]
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(flow_run_id)
    assert flow_run.name == name
    assert flow_run.state is not None and flow_run.state.is_completed()
    assert constants.FLOW_RUN_TAG in flow_run.tags
    for node, ranks in ((0, "01"), (1, "23")):
        messages = [log.message for log in read_task_run_logs(flow_run_id, f"node-{node}")]
        assert sorted(m for m in messages if "total=" in m) == [
            f"rank={r} world=4 total=10" for r in ranks
        ]


def test_env_is_merged_onto_the_parent_environment(client):
    name = client.train(
        trainer=CustomTrainer(func=print_env, env={"PK_TEST_VAR": "hello world; $(rm -rf /)"})
    )
    client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    lines = list(client.get_job_logs(name, step="node-0"))
    assert "PK_TEST_VAR=hello world; $(rm -rf /) PATH_SET=True\n" in lines


def test_default_runtime_and_listing(client):
    runtimes = client.list_runtimes()
    assert [r.name for r in runtimes] == ["torch-distributed"]
    assert client.get_runtime("torch-distributed").trainer.framework == "torch"
    name = client.train(trainer=CustomTrainer(func=print_env))
    client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    job = client.get_job(name)
    assert job.runtime.name == "torch-distributed"
    assert job.num_nodes == 1
    assert [j.name for j in client.list_jobs()] == [name]
    assert [j.name for j in client.list_jobs(runtime=runtimes[0])] == [name]
