"""Node logs: split, coalesced, ordered, followed live, forwarded to the Prefect API."""

import time

from conftest import flow_run_of, read_task_run_logs, wait_supervisor_exit
from training_functions import many_lines, print_streams

from prefect_kubeflow import CustomTrainer
from prefect_kubeflow.backends.logfile import (
    STDERR,
    STDOUT,
    LineSplitter,
    LogLine,
    NodeLogWriter,
    read_node_log,
)


def test_splitter_carries_partial_lines_across_chunks():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == [b"hello"]
    assert splitter.feed(b"ld\n\nx") == [b"world", b""]
    assert splitter.close() == [b"x"]
    assert splitter.close() == []


def test_splitter_coalesces_carriage_returns_even_across_chunks():
    splitter = LineSplitter()
    assert splitter.feed(b"10%\r20%\r") == []
    assert splitter.feed(b"30%\r100%\n") == [b"100%"]
    assert splitter.feed(b"windows line\r\n") == [b"windows line"]


def test_splitter_cuts_long_lines_and_bounds_memory():
    splitter = LineSplitter(max_line_bytes=10)
    pieces = splitter.feed(b"a" * 25)
    assert pieces == [b"a" * 10, b"a" * 10]
    assert splitter.feed(b"\n") == [b"a" * 5]


def test_writer_and_reader_keep_streams_and_tail(tmp_path):
    path = tmp_path / "node-0.log"
    writer = NodeLogWriter(path)
    writer.write(STDOUT, b"one\ntw")
    writer.write(STDERR, b"oops\n")
    writer.write(STDOUT, b"o\n")
    writer.write(STDERR, b"no newline")
    writer.close()
    assert list(read_node_log(path)) == [
        LogLine(STDOUT, "one"),
        LogLine(STDERR, "oops"),
        LogLine(STDOUT, "two"),
        LogLine(STDERR, "no newline"),
    ]
    assert [line.text for line in read_node_log(path, tail_lines=2)] == ["two", "no newline"]
    assert list(read_node_log(path, tail_lines=0)) == []
    assert len(list(read_node_log(path, tail_lines=100))) == 4


def test_each_line_keeps_the_time_it_was_written(tmp_path):
    path = tmp_path / "node-0.log"
    writer = NodeLogWriter(path)
    writer.write(STDOUT, b"early\n")
    time.sleep(0.3)
    writer.write(STDOUT, b"late\n")
    writer.close()
    early, late = read_node_log(path)
    assert late.time - early.time >= 0.3


def test_stderr_reaches_the_api_at_warning_in_file_order(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=print_streams, func_args={"count": 3}))
    client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    lines = [line.rstrip("\n") for line in client.get_job_logs(name, node_index=0)]
    # Each stream keeps its order; the two pipes interleave as the reader found them.
    assert [line for line in lines if line.startswith("out ")] == ["out 0", "out 1", "out 2"]
    assert [line for line in lines if line.startswith("err ")] == ["err 0", "err 1", "err 2"]
    assert "progress 100%" in lines and not any("50%" in line for line in lines)

    wait_supervisor_exit(name)  # it exits once every line is uploaded
    logs = read_task_run_logs(flow_run_of(name, final=True).id, "node-0")
    # Every line of the node file, in the file's order, stderr at WARNING.
    assert [log.message for log in logs] == lines
    # Stamped when the node wrote them (the file's times), strictly increasing.
    file_times = [line.time for line in read_node_log(jobs_dir / name / "node-0.log")]
    api_times = [log.timestamp.timestamp() for log in logs]
    assert all(0 <= api - wrote < 0.001 for api, wrote in zip(api_times, file_times, strict=True))
    assert api_times == sorted(set(api_times))
    levels = {log.message: log.level for log in logs}
    assert [levels[f"out {i}"] for i in range(3)] == [20, 20, 20]
    assert [levels[f"err {i}"] for i in range(3)] == [30, 30, 30]
    assert levels["progress 100%"] == 20


def test_every_line_reaches_the_api(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=many_lines, func_args={"count": 3000}))
    client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    wait_supervisor_exit(name)  # it exits once every line is uploaded
    messages = [
        log.message for log in read_task_run_logs(flow_run_of(name, final=True).id, "node-0")
    ]
    assert [m for m in messages if m.startswith("line ")] == [f"line {i}" for i in range(3000)]
    assert list(client.get_job_logs(name, step="node-0", tail_lines=2)) == [
        "line 2998\n",
        "line 2999\n",
    ]


def test_following_one_node_ends_with_the_node(client):
    name = client.train(trainer=CustomTrainer(func=many_lines, func_args={"count": 50}))
    lines = list(client.get_job_logs(name, step="node-0", follow=True))
    assert [line for line in lines if line.startswith("line ")] == [
        f"line {i}\n" for i in range(50)
    ]
