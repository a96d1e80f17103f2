"""The queue runs one training at a time, in order, and frees/returns the webui's model around it."""

from __future__ import annotations

import time

from test_runner import make_run

from lib_lorakit.host import StandaloneHost
from lib_lorakit.train.queue import TrainQueue


class GpuHost(StandaloneHost):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls: list[str] = []
        self.generating = ""

    def unload_model(self) -> None:
        self.calls.append("unload")

    def reload_model(self) -> None:
        self.calls.append("reload")

    def busy(self):
        return self.generating or None


def drain(queue: TrainQueue, timeout: float = 90) -> list[str]:
    """Tick until the queue is empty and nothing runs; returns the order in which runs were seen running."""
    order: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = queue.tick()
        if active and (not order or order[-1] != active.id):
            order.append(active.id)
        if active is None and not queue.entries():
            return order
        time.sleep(0.1)
    raise AssertionError(f"queue did not drain: {queue.entries()}")


def test_runs_in_order_one_at_a_time_with_the_model_unloaded(workspace):
    project = workspace.create("q")
    host = GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M")
    queue = TrainQueue(host)
    ids = []
    for _ in range(3):
        runs, snap = make_run(project, "success", delay=0.002)
        queue.add("q", snap.id)
        ids.append(snap.id)
    queue.move("q", ids[2], -5)  # the last one goes first
    assert [e.run for e in queue.entries()] == [ids[2], ids[0], ids[1]]
    order = drain(queue)
    assert order == [ids[2], ids[0], ids[1]]
    assert all(runs.get(i).state == "succeeded" for i in ids)
    assert host.calls == ["unload", "reload"]  # once around the whole queue, not per run


def test_nothing_starts_while_the_webui_generates(workspace):
    project = workspace.create("q")
    host = GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M")
    host.generating = "the webui is generating an image"
    queue = TrainQueue(host)
    runs, snap = make_run(project, "success", delay=0.002)
    queue.add("q", snap.id)
    try:
        queue.tick()
    except Exception as e:
        assert "generating" in str(e)
    assert runs.get(snap.id).state == "queued" and host.calls == []
    host.generating = ""
    drain(queue)
    assert runs.get(snap.id).state == "succeeded"


def test_removed_and_stopped_runs_leave_the_queue(workspace):
    project = workspace.create("q")
    host = GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M")
    queue = TrainQueue(host)
    runs, a = make_run(project, "success", delay=0.002)
    _, b = make_run(project, "success", delay=0.002)
    queue.add("q", a.id)
    queue.add("q", b.id)
    queue.remove("q", a.id)
    runs.stop(b.id)  # a queued run that is stopped never starts
    assert drain(queue) == []
    assert runs.get(a.id).state == "queued" and runs.get(b.id).state == "stopped"


def test_a_running_training_explains_why_the_gpu_is_taken(workspace):
    project = workspace.create("q")
    host = GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M")
    queue = TrainQueue(host)
    runs, snap = make_run(project, "hang", delay=0.002)
    queue.add("q", snap.id)
    assert queue.training_message() is None  # queued is not training
    queue.tick()
    deadline = time.monotonic() + 30
    while runs.get(snap.id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    message = queue.training_message()
    assert message and snap.id in message and "stop the run" in message
    runs.stop(snap.id)
    runs.wait(snap.id, timeout=60)
    assert queue.training_message() is None


def test_each_run_the_queue_started_is_reported_once_when_it_ends(workspace):
    project = workspace.create("q")
    host = GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M")
    finished = []
    queue = TrainQueue(host, on_finished=lambda entry, snap: finished.append((entry.run, snap.state)))
    runs, a = make_run(project, "success", delay=0.002)
    _, b = make_run(project, "crash", delay=0.002)
    queue.add("q", a.id)
    queue.add("q", b.id)
    drain(queue)
    queue.tick()
    queue.tick()
    assert finished == [(a.id, "succeeded"), (b.id, "failed")]
