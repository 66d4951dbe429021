"""The Prefect side: subflows, blocks, the collection entry point."""

import json
import os
import subprocess
import sys

import pytest
from conftest import read_task_run_logs
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from training_functions import ddp_all_reduce, fail_on_rank

from prefect_kubeflow import (
    ContainerBackendConfig,
    CustomTrainer,
    LocalProcessBackendConfig,
    TrainerClient,
    TrainingRuntimeSource,
)
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import JobFailedError


def test_train_inside_a_flow_is_a_blocking_subflow(config, jobs_dir):
    @flow(name="nightly-training")
    def nightly() -> str:
        return TrainerClient(backend_config=config).train(
            trainer=CustomTrainer(func=ddp_all_reduce, num_nodes=2)
        )

    state = nightly(return_state=True)
    assert state.is_completed()
    name = state.result()
    client = TrainerClient(backend_config=config)
    assert client.get_job(name).status == constants.TRAINJOB_COMPLETE  # done when train returned
    flow_run_id = json.loads((jobs_dir / name / "flow_run.json").read_text())["id"]
    with get_client(sync_client=True) as prefect:
        child = prefect.read_flow_run(flow_run_id)
        assert child.name == name
        assert child.parent_task_run_id is not None
        parent_task = prefect.read_task_run(child.parent_task_run_id)
    assert parent_task.flow_run_id == state.state_details.flow_run_id
    messages = [log.message for log in read_task_run_logs(flow_run_id, "node-1")]
    assert [m for m in messages if "sum=" in m] == ["rank=1 world=2 sum=3"]


def test_a_failing_subflow_fails_the_parent(config):
    @flow(name="failing-training")
    def failing() -> str:
        return TrainerClient(backend_config=config).train(
            trainer=CustomTrainer(
                func=fail_on_rank, func_args={"rank_to_fail": 0, "sleep_others": 1}
            )
        )

    state = failing(return_state=True)
    assert state.is_failed()
    with pytest.raises(JobFailedError, match="boom on rank 0"):
        state.result()


class TestBlocks(BlockStandardTestSuite):
    @pytest.fixture(
        params=[LocalProcessBackendConfig, ContainerBackendConfig, TrainingRuntimeSource]
    )
    def block(self, request):
        return request.param

    def test_has_a_valid_image(self, block):
        # The suite's own check downloads the logo: there is no internet here.
        assert str(block._logo_url).startswith("https://")


def test_block_save_and_load_round_trip(tmp_path):
    saved = LocalProcessBackendConfig(jobs_dir=str(tmp_path / "j"), stop_grace_period_seconds=3)
    saved.save("team-local", overwrite=True)
    loaded = LocalProcessBackendConfig.load("team-local")
    assert loaded.jobs_dir == str(tmp_path / "j")
    assert loaded.stop_grace_period_seconds == 3


def test_block_register_from_the_module():
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_kubeflow"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    blocks = ("Kubeflow Local Process Backend", "Kubeflow Container Backend")
    for name in (*blocks, "Kubeflow Training Runtime Source"):
        assert name in result.stdout, result.stdout
