"""Shared fixtures: a projects home in a temporary folder, one project in it, and the awkward folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from awkward import Awkward, build_awkward_folder

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
def awkward(tmp_path: Path) -> Awkward:
    """A folder of awkward files (see tests/awkward.py) with what each must become."""
    return build_awkward_folder(tmp_path / "user")
