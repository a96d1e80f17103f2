"""Shared fixtures: a projects home in a temporary folder, one project in it, and the awkward folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from awkward import Awkward, build_awkward_folder
from PIL import Image

from lib_lorakit.project import Project, Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty projects home."""
    return Workspace(tmp_path / "home")


@pytest.fixture
def project(workspace: Workspace) -> Project:
    """A fresh project with default settings."""
    return workspace.create("demo")


@pytest.fixture
def squares_project(workspace: Workspace) -> Project:
    """A project with the trigger word zkstyle and three captioned 64 px images: what the real trainings learn."""
    project = workspace.create("demo", trigger_words=("zkstyle",))
    concept = project.add_concept("demo", 1)
    for name, colour, caption in (("red", (220, 30, 30), "red square"), ("green", (30, 200, 30), "green circle"),
                                  ("blue", (30, 30, 220), "blue triangle")):
        Image.new("RGB", (64, 64), colour).save(concept.folder / f"{name}.png")
        (concept.folder / f"{name}.txt").write_text(f"zkstyle, {caption}")
    return project


@pytest.fixture
def awkward(tmp_path: Path) -> Awkward:
    """A folder of awkward files (see tests/awkward.py) with what each must become."""
    return build_awkward_folder(tmp_path / "user")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing browser test also shows the app's log tail and the page's console (CI prints them)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("browser") is not None:
        from appserver import failure_sections

        for title, text in failure_sections():
            report.sections.append((title, text))
