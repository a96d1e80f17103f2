"""Run by the webui at start: installs into its venv only what is missing there; never changes a package it has."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from lib_lorakit.requirements import pinned_environment, plan_install  # noqa: E402
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
    import tempfile

    import launch  # the webui's; only present when the webui runs this file

    # every package already here pinned as it is: pip may add, never change (an older release is chosen instead)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "webui-as-it-is.txt"
        constraints.write_text("\n".join(pinned_environment()) + "\n", encoding="utf-8")
        for line in plan.install:
            try:
                launch.run_pip(f'install "{line}" -c "{constraints}"', f"Train Style requirement: {line}")
            except Exception as e:  # the webui goes on; the feature that needs it says what is missing
                print(f"[Train Style] could not install {line} without changing the webui's packages: {e}")


if __name__ == "__main__":
    main()
