"""The Prefect UI as a person sees it, in headless Chromium (Debian's, driven by Selenium and
Debian's chromedriver; no browser is downloaded), on a real `prefect server start`.

A TrainJob's flow run page shows its ``node-<i>`` task runs and their log lines (saved as
``docs/trainjob-flow-run.png``, which the README shows). The page's Cancel button, which Prefect
enables for deployments' runs, stops every node of the TrainJob the run trains.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import wait_for
from prefect.settings import PREFECT_API_URL, temporary_settings
from test_deployments import _api, _children, served_sleeping_trainjob, server  # noqa: F401
from training_functions import paced_lines

from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient
from prefect_kubeflow.constants import constants
from prefect_kubeflow.flows.runs import find_flow_runs

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "trainjob-flow-run.png"

webdriver = pytest.importorskip("selenium.webdriver")
# .ci/run installs them (PK_REQUIRE_ENGINES): there a missing browser fails the test.
pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))
    and not os.environ.get("PK_REQUIRE_ENGINES"),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _page_text(driver) -> str:
    return str(driver.find_element("tag name", "body").text)


def _open_flow_run(driver, url: str, flow_run_id, *expected: str) -> None:
    """Open the flow run's page and wait until it shows every one of `expected`."""
    driver.get(f"{url.removesuffix('/api')}/runs/flow-run/{flow_run_id}")
    wait_for(
        lambda: all(text in _page_text(driver) for text in expected),
        60,
        f"the page to show {expected}",
    )


def test_the_flow_run_page_shows_each_node_and_its_lines(server, browser, tmp_path):  # noqa: F811
    with temporary_settings({PREFECT_API_URL: server}):
        client = TrainerClient(LocalProcessBackendConfig(jobs_dir=str(tmp_path / "jobs")))
        trainer = CustomTrainer(func=paced_lines, func_args={"count": 5, "seconds": 1}, num_nodes=2)
        name = client.train(trainer=trainer)
        client.wait_for_job_status(name, timeout=300, polling_interval=0.5)
        run = wait_for(
            lambda: (r := find_flow_runs([name]).get(name)) and r.state.is_final() and r,
            120,
            "the flow run to end",
        )
        _open_flow_run(browser, server, run.id, "Completed", "rank 0 line 4", "rank 1 line 4")
        # Each log row names its task run once the page has them.
        wait_for(
            lambda: all(
                f"\nnode-{i}\nprefect_kubeflow.node" in _page_text(browser) for i in (0, 1)
            ),
            60,
            "the lines' task runs",
        )
        _click_tab(browser, "Task Runs")
        wait_for(
            lambda: {"node-0", "node-1"} <= set(_page_text(browser).splitlines()),
            60,
            "the node-0 and node-1 task runs",
        )
        _click_tab(browser, "Logs")
        time.sleep(3)  # the run graph draws its task runs
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
        client.delete_job(name)


def _click_tab(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    wait_for(
        lambda: [
            e for e in driver.find_elements(By.XPATH, f"//*[text()='{text}']") if e.is_displayed()
        ],
        60,
        f"the {text} tab",
    )[0].click()


def _click_button(driver, text: str) -> None:
    """Click the enabled button reading `text` (the newest one: a dialog's comes last)."""
    from selenium.webdriver.common.by import By

    def clickable():
        buttons = [
            button
            for button in driver.find_elements(By.TAG_NAME, "button")
            if button.text.strip() == text and button.is_enabled() and button.is_displayed()
        ]
        return buttons[-1] if buttons else None

    wait_for(clickable, 60, f"an enabled {text!r} button").click()


def test_the_pages_cancel_button_stops_the_trainjobs_nodes(server, browser, tmp_path):  # noqa: F811
    with served_sleeping_trainjob(server, tmp_path) as (jobs, name, parent):
        _open_flow_run(browser, server, parent.id, "Running")
        _click_button(browser, "Cancel")
        _click_button(browser, "Confirm")
        clicked = time.monotonic()
        job = wait_for(
            lambda: (j := jobs.get_job(name)).status == constants.TRAINJOB_FAILED and j,
            60,
            "the job to stop",
        )
        print(f"nodes stopped {time.monotonic() - clicked:.1f} s after the click")
        assert job.message.startswith("cancelled from Prefect"), job.message
        [child] = _children(server, parent.id)
        wait_for(
            lambda: _api(server, lambda c: c.read_flow_run(child.id)).state.is_cancelled(),
            120,
            "the TrainJob's flow run to end Cancelled",
        )
        _open_flow_run(browser, server, parent.id, "Cancelled")
        jobs.delete_job(name)
