"""The Prefect side: subflows, blocks, the collection entry point."""

import os
import subprocess
import sys

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from training_functions import fail_on_rank

from prefect_kubeflow import (
    ContainerBackendConfig,
    CustomTrainer,
    KubernetesBackendConfig,
    LocalProcessBackendConfig,
    TrainerClient,
    TrainingRuntimeSource,
)
from prefect_kubeflow.errors import JobFailedError


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
        params=[
            LocalProcessBackendConfig,
            ContainerBackendConfig,
            KubernetesBackendConfig,
            TrainingRuntimeSource,
        ]
    )
    def block(self, request):
        return request.param


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
    blocks = (
        "Kubeflow Local Process Backend",
        "Kubeflow Container Backend",
        "Kubeflow Kubernetes Backend",
    )
    for name in (*blocks, "Kubeflow Training Runtime Source"):
        assert name in result.stdout, result.stdout


def test_the_supervisor_gets_the_config_with_its_secrets_and_its_own_type():
    """What `supervisor.launch` sends on stdin rebuilds the very block, secrets included (a
    backend may need credentials while it watches), dispatched by its block type."""
    from pydantic import SecretStr

    from prefect_kubeflow.blocks import TrainingBackendConfig

    config = ContainerBackendConfig(
        registry_username="me",
        registry_password=SecretStr("s3cret"),
        runtime_source=TrainingRuntimeSource(github_token=SecretStr("ghp_token")),
    )
    payload = config.model_dump(mode="json", context={"include_secrets": True})
    rebuilt = TrainingBackendConfig.model_validate(payload)
    assert type(rebuilt) is ContainerBackendConfig
    assert rebuilt.get_backend().settings.registry_password == "s3cret"
    assert rebuilt.runtime_source.github_token.get_secret_value() == "ghp_token"
    # Without the context the secrets stay hidden, as in a flow run's parameters.
    assert "s3cret" not in config.model_dump_json()
    kube = KubernetesBackendConfig(kubeconfig=SecretStr("kind: Config\ntoken: t0ken\n"))
    payload = kube.model_dump(mode="json", context={"include_secrets": True})
    rebuilt = TrainingBackendConfig.model_validate(payload)
    assert type(rebuilt) is KubernetesBackendConfig
    assert rebuilt.backend_settings().kubeconfig == {"kind": "Config", "token": "t0ken"}
    assert "t0ken" not in kube.model_dump_json()
