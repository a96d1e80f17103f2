"""One GPU, two users: a training run never starts while images are generated in this process (a grid, reg
images), and a generation that asks first is refused while a run trains."""

from __future__ import annotations

import threading

import pytest
from test_queue import GpuHost, drain
from test_runner import make_run, wait_until_running

from lib_lorakit import gpu_use
from lib_lorakit.errors import LorakitError
from lib_lorakit.train.queue import TrainQueue


def test_training_waits_while_a_grid_is_generated_and_starts_after(workspace):
    project = workspace.create("q")
    host = GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M")
    queue = TrainQueue(host)
    runs, snap = make_run(project, "success", delay=0.002)
    queue.add("q", snap.id)
    inside, leave = threading.Event(), threading.Event()

    def grid():  # a generator on another thread (a job), holding its turn until told
        with gpu_use.generating("an X/Y/Z grid"):
            inside.set()
            leave.wait(60)

    worker = threading.Thread(target=grid)
    worker.start()
    try:
        assert inside.wait(30)
        assert gpu_use.generating_now() == "an X/Y/Z grid"
        with pytest.raises(LorakitError, match="Training waits: an X/Y/Z grid is being generated"):
            queue.tick()
        assert runs.get(snap.id).state == "queued" and host.calls == []  # the model was not even unloaded
    finally:
        leave.set()
        worker.join(30)
    assert gpu_use.generating_now() is None
    drain(queue)
    assert runs.get(snap.id).state == "succeeded"


def test_a_generation_is_refused_while_a_run_trains_and_marks_nothing(workspace):
    project = workspace.create("q")
    host = GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M")
    queue = TrainQueue(host)
    runs, snap = make_run(project, "success", delay=0.5)
    queue.add("q", snap.id)
    queue.tick()
    wait_until_running(runs, snap.id)
    try:
        with pytest.raises(LorakitError, match=f"Train Style is training on this GPU .*run {snap.id}"):
            with gpu_use.generating("an image", refuse=queue.training_message):
                pytest.fail("generated while a run trains")
        assert gpu_use.generating_now() is None
    finally:
        queue.stop("q", snap.id)


def test_a_failed_generation_gives_the_gpu_back(workspace):
    with pytest.raises(RuntimeError):
        with gpu_use.generating("reg images"):
            raise RuntimeError("the webui failed")
    assert gpu_use.generating_now() is None
    with gpu_use.training_may_start():
        pass
