"""The WebUI in real headless Chromium (Debian's /usr/bin/chromium, driven by playwright): type a sentence, press
Start, and check that audio chunks arrived over the WebSocket and WebAudio playback started while streaming.

The screenshot is saved in the test's tmp dir; with TTS_WEBUI_SCREENSHOT=1 it is also copied to docs/webui.png.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.webstack import webstack  # noqa: F401  (fixture)
from tests.procs import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (make setup installs it)")
    return CHROMIUM


async def test_webui_streams_and_plays(webstack, chromium, tmp_path):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            await page.goto(webstack.url + "/")
            await page.wait_for_function("document.querySelectorAll('#voice option').length > 1", timeout=30_000)
            # the licence of the weights that will speak, where the user picks a voice: the default (fastspeech2)
            # is non-commercial and says so in red; an Apache-2.0 voice says that
            licence = page.locator("#voice-license")
            assert "non-commercial" in await licence.inner_text() and "bad" in await licence.get_attribute("class")
            await page.select_option("#voice", "jm_kumo")
            assert await licence.inner_text() == "licence: Apache-2.0"
            await page.select_option("#voice", "")
            await page.fill("#text", "您好，请问有什么可以帮您？我在银行工作。")
            await page.select_option("#sample-rate", "16000")
            await page.click("#start")
            # chunks arrive and WebAudio's clock passes the first chunk's start: playback has begun
            await page.wait_for_function("window.ttsState.chunks > 0 && window.ttsState.playbackStarted",
                                         timeout=120_000)
            # the character sounding now is highlighted as the audio plays (alignment on WebAudio's clock)
            await page.wait_for_function("window.ttsState.highlighted.length >= 3", timeout=120_000)
            await page.wait_for_function("window.ttsState.state === 'done'", timeout=120_000)
            await page.wait_for_selector("#segments .segment ruby rt")
            state = await page.evaluate("window.ttsState")
            assert state["chunks"] >= 2 and state["bytes"] > 16000 and state["firstChunkMs"] > 0
            spoken = await page.inner_text("#spoken")
            assert spoken == "您好，请问有什么可以帮您？我在银行工作。"
            # highlighted in the order they are spoken, Chinese characters only (marks are silent)
            lit = [spoken[i] for i in state["highlighted"]]
            assert state["highlighted"] == sorted(state["highlighted"]) and "，" not in lit, lit
            assert state["alignments"] == len(spoken)
            assert state["audioContextState"] == "running"
            summary = state["summary"]
            assert summary["segments"] >= 2
            assert await page.locator("#segments .segment").count() == summary["segments"]
            # the page shows what the server's summary says: the segments it counted, first audio at the gateway,
            # the stream's stalls and smallest playback margin, the engine and voice that spoke, the request id
            shown = {k: await page.inner_text(f"#st-{k}") for k in
                     ("seg", "first-server", "stalls", "margin", "engine", "voice", "rid")}
            ms = lambda v: f"{math.floor(v + 0.5)} ms"          # noqa: E731  (JavaScript's Math.round)
            assert shown == {
                "seg": str(summary["segments"]), "first-server": ms(summary["first_chunk_latency_ms"]),
                "stalls": f"{summary['stalls']} · {ms(summary['stall_ms'])}",
                "margin": ms(summary["min_playback_margin_ms"]),
                "engine": summary["engine"], "voice": summary["voice"], "rid": summary["request_id"]}, summary
            assert summary["engine"] == "fastspeech2" and summary["voice"] and summary["first_chunk_latency_ms"] > 0
            assert "yin2" in await page.inner_text("#segments")
            # the saved result downloads as a WAV file (for the caller that made it: here the server's token)
            href = await page.get_attribute("#result-link", "data-url")
            resp = await page.request.get(webstack.url + href)
            assert resp.ok and (await resp.body())[:4] == b"RIFF"
            shot = tmp_path / "webui.png"
            await page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("TTS_WEBUI_SCREENSHOT"):
                shutil.copy(shot, ROOT / "docs" / "webui.png")
            assert not errors, errors
        finally:
            await browser.close()


async def test_batch_page_submits_and_follows(webstack, chromium, tmp_path):
    from playwright.async_api import async_playwright

    jsonl = '{"uttid": "p1", "syn_text": "你好。"}\n{"uttid": "p2", "syn_text": "谢谢。"}\n'
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(webstack.url + "/batch")
            await page.set_input_files("#file", files=[{"name": "lines.jsonl", "mimeType": "application/x-ndjson",
                                                        "buffer": jsonl.encode()}])
            await page.click("#submit")
            await page.wait_for_function("window.batchState.done", timeout=120_000)
            state = await page.evaluate("window.batchState")
            assert state["job"]["state"] == "done" and state["job"]["done"] == 2 and not state["error"]
            assert await page.locator("#lines tbody tr").count() == 2
            async with page.expect_download() as dl:
                await page.click("#download")
            assert (await dl.value).suggested_filename.endswith(".zip")
            await page.screenshot(path=str(tmp_path / "batch.png"), full_page=True)
            if os.environ.get("TTS_WEBUI_SCREENSHOT"):
                shutil.copy(tmp_path / "batch.png", ROOT / "docs" / "webui-batch.png")
            assert not errors, errors
        finally:
            await browser.close()


async def test_webui_interrupt_stops_and_shows_what_was_heard(webstack, chromium):
    from playwright.async_api import async_playwright

    text = "".join(f"这是第{i}句话，我们正在测试语音合成服务。" for i in range(1, 6))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = await browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(webstack.url + "/")
            await page.wait_for_function("document.querySelectorAll('#voice option').length > 1", timeout=30_000)
            await page.fill("#text", text)
            await page.click("#start")
            await page.wait_for_function("window.ttsState.highlighted.length >= 12", timeout=120_000)
            await page.click("#interrupt")
            await page.wait_for_function("window.ttsState.interrupted !== null", timeout=60_000)
            await page.wait_for_function("window.ttsState.state === 'done'", timeout=60_000)
            state = await page.evaluate("window.ttsState")
            cut = state["interrupted"]
            heard = cut["heard_text"]
            assert heard and text.startswith(heard) and len(heard) < len(text) / 2
            # what the page lit up is what the server says was heard (give or take the character sounding then)
            assert abs(max(state["highlighted"]) + 1 - len(heard)) <= 3, (state["highlighted"], heard)
            assert heard in await page.inner_text("#heard")
            assert state["summary"]["interruptions"] == 1
            assert not errors, errors
        finally:
            await browser.close()
