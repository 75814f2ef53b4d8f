"""The one-page report: built by the CLI's first command (bundled JFK clip, bundled tiny.en),
self-contained, rendered by headless Chromium, and every section equal to the library's own
answer computed here another way."""

import base64
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.image import imread

import jaxasr_interp as jai
from jaxasr_interp.cli.main import main
from jaxasr_interp.patching.sweeps import clean_token_logits
from jaxasr_interp.report.page import PAGE_FIGURES

JFK = str(jai.sample_path("jfk.wav"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REFERENCE = jai.sample_transcripts()["jfk.wav"]


@pytest.fixture(scope="module")
def model():
    return jai.load("tiny.en")


@pytest.fixture(scope="module")
def built(model, tmp_path_factory):
    """The report of the bundled JFK clip, as the README's first command writes it."""
    out = tmp_path_factory.mktemp("report")
    page = jai.report(model, JFK, out, reference=REFERENCE, progress=False)
    assert page == out / "index.html" and page.is_file()
    return out, json.loads((out / "report.json").read_text())


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is needed: apt-get install chromium (.ci/run installs it)")


def headless(tmp_path, *args) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


# Appended to a copy of the page only: reports, after the load event, how many images decoded.
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 50);
  const p = document.createElement("pre"); p.id = "probe";
  p.textContent = `images ${ok.length}/${imgs.length}`; document.body.appendChild(p);
});</script>"""


def test_page_is_self_contained_and_its_images_are_the_pngs_beside_it(built):
    out, _ = built
    page = (out / "index.html").read_text()
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing fetched from anywhere
    inlined = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(inlined) == len(PAGE_FIGURES) == 5
    for b64, name in zip(inlined, PAGE_FIGURES):
        data = base64.b64decode(b64)
        assert data.startswith(PNG_MAGIC) and data == (out / f"{name}.png").read_bytes()
        height, width = imread(out / f"{name}.png").shape[:2]
        assert width > 300 and height > 150


def test_page_renders_in_headless_chromium(built, tmp_path):
    out, num = built
    probe = tmp_path / "probe.html"
    probe.write_text((out / "index.html").read_text().replace("</body>", PROBE + "</body>"))
    proc = headless(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '<pre id="probe">images 5/5</pre>' in proc.stdout, proc.stdout[-500:]
    assert html.escape(num["transcript"], quote=False) in proc.stdout
    shot = tmp_path / "shot.png"
    proc = headless(tmp_path, "--window-size=1200,3000", f"--screenshot={shot}", (out / "index.html").as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    drawn = (pixels.min(axis=-1) < 0.9).mean()  # share of non-white pixels: figures, text
    assert pixels.shape[:2] == (3000, 1200) and 0.1 < drawn < 0.9, drawn


def test_transcript_and_lenses_agree_with_the_known_text(built, model):
    _, num = built
    assert num["transcript"].startswith("And so my fellow Americans")  # as PyTorch's greedy
    assert num["transcript"].endswith("what you can do for your country.")
    assert num["reference"] == REFERENCE and 0 <= num["wer"] <= 0.1
    el = num["encoder_lens"]
    assert len(el["transcripts"]) == model.dims.n_audio_layer
    assert el["transcripts"][-1].strip() == num["transcript"]  # the last layer is the model
    assert el["wer"][-1] == pytest.approx(num["wer"], abs=1e-9) and el["wer"][0] > 0.9
    sat = np.asarray(num["saturation"])
    assert sat.shape == (len(model.tokenizer.prompt()) + len(num["token_ids"]),)
    assert sat.min() >= 0 and sat.max() <= model.dims.n_text_layer


def test_alignment_moves_forward_in_time_within_the_audio(built):
    _, num = built
    peaks = np.asarray(num["alignment_peak_seconds"])
    assert len(peaks) == len(num["token_ids"]) + 1  # every transcript token and end-of-text
    assert peaks.min() >= 0 and peaks.max() <= num["seconds"]
    order = np.argsort(np.argsort(peaks))  # Spearman: rank correlation with the token index
    rho = np.corrcoef(order, np.arange(len(peaks)))[0, 1]
    assert rho > 0.8, rho


def test_head_patching_cell_equals_a_single_head_edit_of_the_full_decoder(built, model):
    _, num = built
    delta = np.asarray(num["head_patching"]["mean_logit_change"])
    assert delta.shape == (model.dims.n_text_layer, model.dims.n_text_head)
    assert np.abs(delta).max() > 0.1  # patching towards noise does act somewhere
    tok, site = model.tokenizer, "decoder.cross_attn.z"
    n_prompt = len(tok.prompt())
    tokens = jnp.asarray(tok.prompt() + num["token_ids"] + [tok.eot])
    features, _ = jai.encode(model.params, jai.log_mel(jai.load_audio(JFK)), dims=model.dims)
    ref = jai.reference_activations(model, tokens, [site], seed=0)[site]

    def mean_change(layer, head, alpha):  # one compiled program: the edit's data differ only
        mask = jnp.zeros((model.dims.n_text_layer, 1, model.dims.n_text_head)).at[layer, 0, head].set(1.0)
        edits = {site: jai.interpolate(ref, alpha, mask=mask)}
        return np.asarray(clean_token_logits(model.params, tokens, features, dims=model.dims, edits=edits))

    clean = mean_change(0, 0, 0.0)  # alpha = 0 is an exact identity
    for layer, head in [np.unravel_index(np.argmin(delta), delta.shape), (0, 0)]:
        want = float(np.mean((mean_change(layer, head, 1.0) - clean)[n_prompt - 1:]))
        assert delta[layer, head] == pytest.approx(want, abs=2e-3)


def test_the_cli_reports_on_the_bundled_clip_by_default(monkeypatch, tmp_path, capsys):
    """``jaxasr-interp report --out DIR`` (the README's first command) calls :func:`jai.report`
    on the bundled clip with its known transcript; the real run is the ``built`` fixture."""
    calls = []

    def fake_report(model, wave, out_dir, **kw):
        calls.append((model, wave, out_dir, kw))
        return Path(out_dir) / "index.html"

    # the module, not ``jai.report`` (the package attribute is the function of the same name)
    monkeypatch.setattr(sys.modules["jaxasr_interp.report.page"], "report", fake_report)
    monkeypatch.setattr("jaxasr_interp.whisper.api.load", lambda name, dtype: f"model {name} {dtype}")
    assert main(["report", "--out", str(tmp_path), "--alpha", "0.5"]) == 0
    [(model, wave, out_dir, kw)] = calls
    assert model == "model tiny.en float32" and out_dir == str(tmp_path)
    assert kw["dtype"] == jnp.float32 and kw["precision"] == "highest"  # --dtype / --precision defaults
    np.testing.assert_array_equal(wave, jai.load_audio(JFK))
    assert kw["reference"] == REFERENCE and kw["name"] == "jfk.wav" and kw["alpha"] == 0.5
    assert capsys.readouterr().out.strip() == str(tmp_path / "index.html")
