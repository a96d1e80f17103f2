"""The Captions panel's HTML: text from caption files and file names is escaped, never markup."""

from lib_lorakit.captions.audit import AuditReport, Finding
from lib_lorakit.captions.ops import CaptionDiff, TagCount
from lib_lorakit.captions.service import TagReport
from lib_lorakit.captions.store import CaptionRecord, HistoryEntry
from lib_lorakit.ui import render_captions as rc

EVIL = '<img src=x onerror="alert(1)">'


def test_tags_captions_and_names_from_files_are_escaped():
    record = CaptionRecord(image=f"dataset/1_a/{EVIL}.png", caption=f"dataset/1_a/{EVIL}.txt", concept=EVIL,
                           kind="dataset", text=EVIL, tags=(EVIL,), exists=True, encoding="utf-8", other_ext=False)
    finding = Finding(code="DOMINANT_TAG", severity="warning", images=[record.image], detail=f"{EVIL} everywhere",
                      why="seeds/000", fix=f"Prune {EVIL}")
    pieces = [
        rc.summary_html([record], [EVIL], 1),
        rc.frequency_html([TagCount(tag=EVIL, total=1, per_concept={EVIL: 1})]),
        rc.preview_html([CaptionDiff(image=record.image, before=EVIL, after=EVIL, added=(EVIL,), removed=())]),
        rc.step_html(HistoryEntry(id="000001", label=f"Prune {EVIL}", time="2026-11-21T10:00:00", op={}, files=1,
                                  written=1, conflicts=(record.image,))),
        rc.history_html([HistoryEntry(id="000001", label=EVIL, time="2026-11-21T10:00:00", op={}, files=1)]),
        rc.audit_html(AuditReport(findings=[finding])),
        rc.tag_result_html(TagReport(tagged=[record.image], failed=[{"image": record.image, "reason": EVIL}])),
    ]
    for html in pieces:
        assert "<img" not in html and "&lt;img" in html, html


def test_an_audit_without_findings_says_so_and_estimates_are_flagged():
    assert "No findings" in rc.audit_html(AuditReport(findings=[]))
    finding = Finding(code="OVERLONG_CAPTION", severity="error", images=["dataset/1_a/x.png"], detail="long",
                      why="w", fix="f")
    assert "estimates" in rc.audit_html(AuditReport(findings=[finding], tokens_estimated=True))
