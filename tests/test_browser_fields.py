"""The Train panel's settings fields in headless Chromium: the chosen preset fills grouped fields, each with its
reason and where its value came from; learning rate and network dim set in fields reach the plan and the TOML
that the trainer reads, with the source "yours"; changing the preset fills the fields again."""

from __future__ import annotations

import os
import time

import pytest
from test_browser import CHROMIUM, html_of
from test_browser_train import app, page, pick  # noqa: F401  (fixtures: the Train tab of a real app)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def field_input(pg, name: str):
    return pg.locator(f"#train_style_opt_{name} input").first


def label_of(pg, name: str) -> str:
    return pg.locator(f"#train_style_opt_{name}").inner_text()


def wait_label(pg, name: str, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in label_of(pg, name):
            return label_of(pg, name)
        time.sleep(0.1)
    raise AssertionError(f"{name}'s field says {label_of(pg, name)!r}, not {text!r}")


def test_fields_show_the_preset_with_reasons_and_sources(app, page):  # noqa: F811
    html_of(page, "train_style_train_heading").get_by_text("zkstyle").wait_for(timeout=20_000)
    pick(page, "train_style_preset", "style-sd15-loha")
    # LoHa's rate is 2e-4 from seeds/003 (a guide); its dim 8 too; the seed is the declaration's default
    page.wait_for_function("() => document.querySelector('#train_style_opt_network_dim input').value === '8'",
                           timeout=20_000)  # the fields refilled (LoRA's rate is "· guide" too: no label to wait on)
    wait_label(page, "learning_rate", "· guide")
    assert float(field_input(page, "learning_rate").input_value()) == pytest.approx(2e-4)
    assert field_input(page, "network_dim").input_value() == "8"
    assert "Step size for everything" in label_of(page, "learning_rate")  # the option's one-line reason
    assert "seeds/003" in label_of(page, "learning_rate")  # and the preset's reason for its value
    assert "· default" in label_of(page, "seed")
    # the other groups open on a click: a choice is a dropdown, a value that may be none a text box
    page.locator("#train_style_group_network").get_by_text("Network", exact=True).first.click()
    page.locator("#train_style_opt_algo input").wait_for(timeout=10_000)
    assert field_input(page, "algo").input_value() == "loha"
    assert page.locator("#train_style_opt_conv_dim textarea, #train_style_opt_conv_dim input").first.input_value() \
        == "4"
    # changing the preset fills the fields again
    pick(page, "train_style_preset", "style-sd15-lora")
    page.wait_for_function("() => document.querySelector('#train_style_opt_network_dim input').value === '16'",
                           timeout=20_000)
    assert float(field_input(page, "learning_rate").input_value()) == pytest.approx(1e-4)
    assert field_input(page, "algo").input_value() == "none"  # LoRA is no LyCORIS algorithm
    assert page.locator("#train_style_opt_conv_dim textarea, #train_style_opt_conv_dim input").first.input_value() \
        == ""
    if os.environ.get("TRAIN_STYLE_SCREENSHOT_FIELDS"):
        page.screenshot(path=os.environ["TRAIN_STYLE_SCREENSHOT_FIELDS"] + ".network.png", full_page=True)


def test_learning_rate_and_dim_set_in_fields_reach_the_plan_and_toml_as_user(app, page):  # noqa: F811
    url, home = app
    html_of(page, "train_style_train_heading").get_by_text("zkstyle").wait_for(timeout=20_000)
    pick(page, "train_style_preset", "style-sd15-lora")
    pick(page, "train_style_base_model", "base.safetensors (SD1)")
    page.wait_for_function("() => document.querySelector('#train_style_opt_network_dim input').value === '16'",
                           timeout=20_000)
    page.fill("#train_style_overrides textarea", "")
    field_input(page, "learning_rate").fill("0.0003")
    field_input(page, "network_dim").fill("24")
    field_input(page, "network_dim").press("Tab")
    assert "✎" in wait_label(page, "network_dim", "yours (preset: 16)")
    wait_label(page, "learning_rate", "yours")
    if os.environ.get("TRAIN_STYLE_SCREENSHOT_FIELDS"):
        page.screenshot(path=os.environ["TRAIN_STYLE_SCREENSHOT_FIELDS"], full_page=True)
    page.click("#train_style_check")
    page.locator("#train_style_steps").wait_for(timeout=20_000)
    for name, value in (("learning_rate", "0.0003"), ("network_dim", "24")):
        row = page.locator(".ts-settings tr", has=page.locator("td", has_text=name)).first
        cells = row.locator("td")
        assert cells.nth(0).text_content() == name
        assert float(cells.nth(1).text_content()) == pytest.approx(float(value))
        assert cells.nth(2).text_content() == "yours"
    # an unchanged field is no override: the rate of the text encoder still comes from the preset
    row = page.locator(".ts-settings tr", has=page.locator("td", has_text="network_alpha")).first
    assert "preset style-sd15-lora" in row.locator("td").nth(2).text_content()
    # Train: the run's args.toml (what sd-scripts reads) holds the field values
    before = set(home.rglob("args.toml"))
    page.click("#train_style_train")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not set(home.rglob("args.toml")) - before:
        time.sleep(0.2)
    (args,) = set(home.rglob("args.toml")) - before
    text = args.read_text()
    assert "network_dim = 24" in text and "learning_rate = 0.0003" in text
    page.locator("#train_style_run").wait_for(timeout=20_000)
    page.wait_for_function("() => ['succeeded', 'failed'].includes("
                           "document.querySelector('#train_style_run')?.dataset.state)", timeout=60_000)


def test_audit_thresholds_are_fields_whose_values_reach_the_audit(app, page):  # noqa: F811
    page.locator("#train_style_tabs button", has_text="Captions").first.click()
    page.click("#train_style_check_captions")
    audit = html_of(page, "train_style_audit")
    audit.locator(".ts-finding, p, li").first.wait_for(timeout=20_000)
    assert audit.locator('.ts-finding[data-code="OVERLONG_CAPTION"]').count() == 0  # 75 tokens: all fit
    page.locator("#train_style_audit_thresholds").get_by_text("Audit thresholds").first.click()
    box = page.locator("#train_style_audit_max_tokens input")
    box.wait_for(timeout=10_000)
    assert box.input_value() == "75"  # the declared default
    assert "longer captions are cut" in page.locator("#train_style_audit_max_tokens").inner_text()  # its reason
    box.fill("2")
    page.click("#train_style_check_captions")
    audit.locator('.ts-finding[data-code="OVERLONG_CAPTION"]').first.wait_for(timeout=20_000)
