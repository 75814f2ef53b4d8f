"""The patching experiments on the researcher's own inputs: ``experiment repetition AUDIO...``
(loops found in the user's files; the others reported as "no loop found") and
``experiment contextual-bias --sentences FILE`` (a CSV / TSV list, recordings or synthesis),
with the results JSON of the built-in runs (the keys of ``notes/patching_results.json``) and
one-line errors for malformed lists. tiny.en, small sweeps (one alpha, few tokens)."""

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from jaxasr_interp.cli.main import main
from jaxasr_interp.data.minimal_pairs import read_user_list
from jaxasr_interp.experiments import repetition_pool as RP
from jaxasr_interp.whisper.audio import SAMPLE_RATE, sample_path

BUILT_IN = json.loads((Path(__file__).resolve().parents[1] / "notes" / "patching_results.json").read_text())
RUN_ONLY = {"seconds", "sizes"}  # added by scripts/patching_experiments.py, not by the experiment
JFK = str(sample_path("jfk"))
# A real recording labelled so that tiny.en's (correct) "country" counts as the contextual
# error: the pipeline's real-audio path, deterministic, without synthesis.
JFK_LINE = f'"And so my fellow Americans, ask not what your county can do for you",county,country,{JFK}'
LICE_LINE = "I ate a bowl of white lice with my curry.,lice,rice,"  # synthesized (no audio)


def _json(path) -> dict:
    return json.loads(Path(path).read_text())


def test_repetition_on_a_file_that_does_not_loop(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["experiment", "repetition", JFK, "--out", str(out), "--max-new-tokens", "32"]) == 0
    printed = capsys.readouterr().out
    assert f"no loop found: {JFK}\tAnd so my fellow Americans" in printed
    assert "no loop found in any of the 1 file(s) under tiny.en: nothing to patch" in printed
    s = _json(out / "repetition.json")
    assert (s["n_pool"], s["n_loops"], s["n_items"], s["loop_sources"], s["plots"]) == (1, 0, 0, [], [])
    assert [r["audio"] for r in s["no_loop"]] == [JFK] and "nothing to patch" in s["message"]
    assert not (out / "repetition.csv").exists()


def test_repetition_on_a_looping_file_runs_the_built_in_sweep(tmp_path, capsys, monkeypatch):
    # The pool's own loop-inducing construction (bundled clips only: the pocketsphinx clips
    # left out so the input is the same everywhere): candidate 10 is 24.7 s of LibriVox clips
    # under white noise at -5 dB, on which tiny.en writes "... two two two two two two ...".
    monkeypatch.setattr(RP, "CARDS", tmp_path / "no_cards")
    loop = tmp_path / "loop.wav"
    sf.write(loop, RP.candidate_pool(0)[10]["audio"], SAMPLE_RATE, subtype="FLOAT")  # bit-exact
    out = tmp_path / "out"
    assert main(["experiment", "repetition", str(loop), JFK, "--out", str(out), "--alphas", "1",
                 "--max-new-tokens", "24"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"loop found: {loop}\t") and "two two two" in printed[0]
    assert printed[1].startswith(f"no loop found: {JFK}\t")
    assert printed[2].startswith("repetition [tiny.en]: 1 of 2 candidates loop, 1 patched; best layer")
    s = _json(out / "repetition.json")
    assert set(BUILT_IN["repetition/tiny.en"]) - RUN_ONLY <= set(s)  # the built-in schema, plus no_loop
    assert set(s) - set(BUILT_IN["repetition/tiny.en"]) == {"no_loop"}
    assert (s["n_pool"], s["n_loops"], s["n_items"]) == (2, 1, 1)
    assert s["pool_sources"] == [str(loop), JFK] and s["loop_sources"] == [str(loop)]
    assert [r["audio"] for r in s["no_loop"]] == [JFK] and s["items"][0]["text"] == ""
    assert len(s["layer_rate"]) == 4 and len(s["head_rate"][0]) == 6  # tiny.en: 4 layers x 6 heads
    assert all(Path(p).is_file() for p in s["plots"] + [s["csv"]])


def test_repetition_with_a_missing_file_is_one_error_line(tmp_path, capsys):
    assert main(["experiment", "repetition", str(tmp_path / "nope.wav"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: audio file not found") and err.count("\n") == 1


def test_contextual_bias_on_your_sentences(tmp_path, capsys):
    synth = shutil.which("espeak-ng") is not None
    lines = ["sentence,spoken,expected,audio", JFK_LINE] + ([LICE_LINE] if synth else [])
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["experiment", "contextual-bias", "--sentences", str(tmp_path / "mine.csv"), "--out", str(out),
                 "--families", "encoder.mlp,decoder.mlp", "--alphas", "1", "--max-items", "1"]) == 0
    assert capsys.readouterr().out.startswith("contextual-bias [tiny.en]: ")
    s = _json(out / "contextual_bias.json")
    assert set(s) == set(BUILT_IN["contextual-bias/tiny.en"]) - RUN_ONLY  # the built-in run's schema
    assert s["n_sentences"] == len(lines) - 1 == sum(s["counts"].values())
    assert s["counts"]["contextual"] >= 1 and s["n_items"] == 1
    assert s["errors"][0]["sentence"] == "And so my fellow Americans, ask not what your county can do for you"
    assert "country" in s["errors"][0]["transcript"]
    assert set(s["best"]) == {"encoder", "decoder"} and set(s["alphas"]) == {"encoder.mlp", "decoder.mlp"}
    synthesized = sorted(p.name for p in (out / "audio").glob("*.wav")) if (out / "audio").is_dir() else []
    assert synthesized == (["0001_lice.wav"] if synth else [])  # the recording is not synthesized
    assert Path(s["csv"]).is_file() and all(Path(p).is_file() for p in s["plots"])


def test_sentence_lists_csv_and_tsv(tmp_path):
    (tmp_path / "rec").mkdir()
    shutil.copy(JFK, tmp_path / "rec" / "jfk.wav")
    (tmp_path / "a.csv").write_text("# my list\n\nsentence,spoken,expected\n"
                                    '"The cat, they say, drank the silk.",silk,milk\n')
    (s,) = read_user_list(tmp_path / "a.csv")
    assert (s.sentence, s.spoken, s.expected, s.audio, s.template) == (
        "The cat, they say, drank the silk.", "silk", "milk", "", 4)  # template: the line number
    (tmp_path / "b.tsv").write_text("sentence\tspoken\texpected\taudio\n"
                                    "He held the lock.\tlock\trock\trec/jfk.wav\nShe ate lice.\tlice\trice\t\n")
    a, b = read_user_list(tmp_path / "b.tsv")
    assert a.audio == str(tmp_path / "rec" / "jfk.wav") and b.audio == ""  # relative to the list's folder


MALFORMED = [
    ("sentence,spoken\nThe cat drank the silk.,silk\n", "line 1: the header lacks the column(s) expected"),
    ("sentence,spoken,expected,voice\n", "line 1: the header has the unknown column(s) 'voice'"),
    ("sentence,spoken,expected\nThe cat drank the silk.,silk\n", "line 2: the 'expected' field is missing"),
    ("sentence,spoken,expected\n\nThe cat, drank the silk.,silk,milk\n", "line 3: 4 fields, the header names 3"),
    ("sentence,spoken,expected\nThe cat drank the silk.,silk, \n", "line 2: the 'expected' field is empty"),
    ("sentence,spoken,expected\n# ok\nThe cat drank the milk.,silk,milk\n",
     "line 3: the spoken word 'silk' does not occur in 'The cat drank the milk.'"),
    ("sentence,spoken,expected,audio\nThe cat drank the silk.,silk,milk,nope.wav\n", "line 2: audio file not found"),
    ('sentence,spoken,expected\nThe cat drank the silk.,silk,milk\n"Oh,silk,milk\nx,y,z\n',
     "line 3: a field runs over several lines"),
    ("sentence,spoken,expected\n", "holds no sentences, only its header line"),
]


@pytest.mark.parametrize("body,message", MALFORMED)
def test_malformed_sentence_lists_are_one_error_line(tmp_path, capsys, body, message):
    (tmp_path / "bad.csv").write_text(body)
    assert main(["experiment", "contextual-bias", "--sentences", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'bad.csv'}") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before any work
