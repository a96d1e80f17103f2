"""Run by the webui at start: installs into its venv only what is missing there; never changes a package it has."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from lib_lorakit.requirements import plan_install  # noqa: E402
from lib_lorakit.train.environment import check_submodule  # noqa: E402


def main() -> None:
    problem = check_submodule(ROOT)
    if problem:
        print(f"[Train Style] {problem}")
    plan = plan_install(ROOT / "requirements.txt")
    for warning in plan.mismatched:
        print(f"[Train Style] {warning}")
    if not plan.install:
        return
    import launch  # the webui's; only present when the webui runs this file

    for line in plan.install:
        launch.run_pip(f'install "{line}"', f"Train Style requirement: {line}")


if __name__ == "__main__":
    main()
