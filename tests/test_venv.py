"""packages_to_install: a cached venv, built once per package set, from a real index on loopback."""

import pytest
from package_index import package_index as serve_package_index
from training_functions import import_package

from prefect_kubeflow import CustomTrainer
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import JobFailedError


def _trainer(package: str, index_url: str) -> CustomTrainer:
    return CustomTrainer(
        func=import_package, packages_to_install=[package], pip_index_urls=[index_url]
    )


@pytest.fixture(scope="module")
def package_index():
    """A PEP 503 simple index on 127.0.0.1 serving one package, tinypkg 1.0."""
    with serve_package_index() as served:
        yield served


def test_a_venv_is_built_once_and_reused(client, package_index, tmp_path):
    index_url, requests = package_index
    trainer = _trainer("tinypkg==1.0", index_url)
    first = client.train(trainer=trainer)
    client.wait_for_job_status(first, timeout=300, polling_interval=0.2)
    venvs = [p for p in (tmp_path / "venvs").iterdir() if p.is_dir()]
    assert len(venvs) == 1
    lines = [line for line in client.get_job_logs(first) if line.startswith("[node-0] tinypkg")]
    assert lines == [f"[node-0] tinypkg 42 from {next(venvs[0].rglob('tinypkg/__init__.py'))}\n"]
    downloads = requests.count("/files/tinypkg-1.0-py3-none-any.whl")
    assert downloads == 1
    built = (venvs[0] / ".complete").stat().st_mtime_ns

    second = client.train(trainer=trainer)
    job = client.wait_for_job_status(second, timeout=300, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE
    assert [p for p in (tmp_path / "venvs").iterdir() if p.is_dir()] == venvs
    assert (venvs[0] / ".complete").stat().st_mtime_ns == built
    assert requests.count("/files/tinypkg-1.0-py3-none-any.whl") == downloads  # no new pip run
    assert any("tinypkg 42" in line for line in client.get_job_logs(second))


def test_a_package_pip_cannot_find_fails_the_job_and_leaves_no_venv(
    client, package_index, tmp_path
):
    index_url, _ = package_index
    name = client.train(trainer=_trainer("no-such-package-xyz==9.9", index_url))
    with pytest.raises(JobFailedError, match="no-such-package-xyz") as failed:
        client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert "pip could not install" in str(failed.value)
    assert [p for p in (tmp_path / "venvs").iterdir() if p.is_dir()] == []
    job = client.get_job(name)
    assert job.status == constants.TRAINJOB_FAILED


def test_two_jobs_racing_for_the_same_venv_share_one_build(client, package_index, tmp_path):
    index_url, requests = package_index
    trainer = _trainer("tinypkg>=1.0", index_url)
    downloads = requests.count("/files/tinypkg-1.0-py3-none-any.whl")
    names = [client.train(trainer=trainer), client.train(trainer=trainer)]
    for name in names:
        assert client.wait_for_job_status(name, timeout=300, polling_interval=0.2).status == (
            constants.TRAINJOB_COMPLETE
        )
    assert len([p for p in (tmp_path / "venvs").iterdir() if p.is_dir()]) == 1
    assert requests.count("/files/tinypkg-1.0-py3-none-any.whl") == downloads + 1
