"""Text from files and users is escaped before it becomes HTML."""

from __future__ import annotations

from PIL import Image

from lib_lorakit.dataset.report import build_report
from lib_lorakit.jobs import JobState
from lib_lorakit.ui.render import import_html, job_html, report_html

EVIL = '<img src=x onerror="alert(1)">'


def test_report_escapes_concept_and_file_names(workspace):
    project = workspace.create("p")
    folder = project.root / "dataset" / "2_a<b>c"  # made by hand: the tab refuses such names, Linux does not
    folder.mkdir()
    Image.new("RGB", (40, 40), "red").save(folder / "x<script>.png")
    html = report_html(build_report(project))
    assert "<script>" not in html and "<b>c" not in html
    assert "x&lt;script&gt;.png" in html and "a&lt;b&gt;c" in html


def test_import_and_job_html_escape_reasons_and_titles():
    html = import_html({"imported": [], "already": [], "skipped": [{"source": EVIL, "reason": EVIL}],
                        "warnings": [{"source": "a", "message": EVIL}], "duplicates": [{"kind": "near",
                                                                                         "images": [EVIL]}]})
    assert "<img" not in html and "&lt;img" in html
    job = JobState(id="abc", kind="import", project="p", title=EVIL, state="failed", error=EVIL)
    assert "<img" not in job_html(job)
