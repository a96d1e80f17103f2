"""The log reader on real sd-scripts output recorded in tests/data (see its README)."""

from __future__ import annotations

from pathlib import Path

from lib_lorakit.train.progress import LogReader, advice_for

DATA = Path(__file__).resolve().parent / "data"


def read(name: str, chunk: int | None = None) -> LogReader:
    reader = LogReader()
    text = (DATA / name).read_bytes().decode("utf-8", "replace")
    pieces = [text] if chunk is None else [text[i:i + chunk] for i in range(0, len(text), chunk)]
    for piece in pieces:
        reader.feed(piece)
    reader.flush()
    return reader


def test_a_complete_run():
    r = read("sd_scripts_lora_run.log")
    p = r.progress
    assert (p.step, p.total, p.epoch, p.epochs) == (4, 4, 2, 2)
    assert p.eta_s == 0 and 1.0 < p.seconds_per_step < 4.0 and p.loss is not None
    assert [s for s, _ in r.losses] == [1, 2, 3, 4]
    assert [Path(s).name for s in r.saved] == ["demo-step00000002.safetensors", "demo-step00000004.safetensors",
                                               "demo.safetensors"]
    assert r.samples_at == [2, 4]
    assert not any(line.lstrip().startswith("steps:") for line in r.tail)  # redraws stay out of the tail


def test_chunk_boundaries_do_not_matter():
    whole = read("sd_scripts_lora_run.log")
    for size in (1, 7, 100):
        assert read("sd_scripts_lora_run.log", chunk=size).progress == whole.progress


def test_a_stopped_run_stops_midway():
    r = read("sd_scripts_lora_stopped.log")
    assert (r.progress.step, r.progress.total) == (3, 4)
    assert [Path(s).name for s in r.saved] == ["demo-step00000002.safetensors"]


def test_a_resumed_run_counts_from_where_it_left_off():
    r = read("sd_scripts_lora_resumed.log")
    assert (r.progress.step, r.progress.total) == (4, 4)  # the bar itself shows 2/2
    assert [s for s, _ in r.losses] == [3, 4]


def test_advice_matches_the_failure():
    assert "train_batch_size" in advice_for(["RuntimeError: CUDA out of memory. Tried to allocate 20 MiB"])
    assert "no training images" in advice_for(["No data found. Please verify arguments"])
    assert "trainer setup" in advice_for(["ModuleNotFoundError: No module named 'lycoris'"])
    assert advice_for(["something else"]).startswith("See the end of the log")
