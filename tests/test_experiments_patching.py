"""The pieces of the patching experiments that decide outcomes: the repetition detector, the
loop-resolution rule, behavioural metrics, the minimal-pair generator, error positions, the
patch layout of the repetition sweep, and the CLI's error handling."""

import numpy as np
import pytest

from jaxasr_interp.cli.main import main
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.data.minimal_pairs import PAIRS, generate, read_user_list
from jaxasr_interp.experiments.contextual_bias import classify, error_position
from jaxasr_interp.experiments.repetition import SITE_HEAD, SITE_LAYER, pair_weights, patch_weights, resolved
from jaxasr_interp.patching.decoding import behaviour, collapse_repeats, has_repetition

LOOPS = [
    "I went to the store and then and then and then and then",
    "Thank you. Thank you. Thank you.",
    "so my fellow americans ask not ask not ask not ask not ask",
    "hahahahahahahahahahahahahahahahahahahahahahahahaha",  # one "word": caught by the gzip ratio
    "the the the the",
    "Mr. John Dashwood has done a new year to consider how much they're going to be. How much they're going to be for.",
]
NOT_LOOPS = [
    "the cat sat on the mat",
    "no, no, I said it twice",
    "thank you, thank you for coming",  # a two-word phrase said twice is ordinary speech
    "he was not an ill disposed young man",
    "",
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
]


@pytest.mark.parametrize("text", LOOPS)
def test_repetition_detector_finds_loops(text):
    assert has_repetition(text)


@pytest.mark.parametrize("text", NOT_LOOPS)
def test_repetition_detector_leaves_ordinary_text(text):
    assert not has_repetition(text)


def test_collapse_keeps_each_loop_once_and_drops_a_cut_off_copy():
    assert collapse_repeats(LOOPS[0]) == "i went to the store and then"
    assert collapse_repeats(LOOPS[2]) == "so my fellow americans ask not"
    assert collapse_repeats("a b c d e f") == "a b c d e f"
    assert collapse_repeats("one two one two one two three four") == "one two three four"
    assert collapse_repeats(LOOPS[5]) == ("mr john dashwood has done a new year to consider how much they're going "
                                          "to be for")


def test_a_loop_is_resolved_only_without_repetition_and_with_the_rest_intact():
    clean = "so my fellow americans ask not ask not ask not ask not ask"
    assert resolved("So my fellow Americans, ask not what", clean, 0.3)  # 1 insertion in 6 words
    assert not resolved("so my fellow americans ask not ask not ask not", clean, 0.3)  # still loops
    assert not resolved("", clean, 0.3)  # silence is not a fix
    assert not resolved("the weather is nice today", clean, 0.3)  # the rest broken


def test_behaviour_metrics():
    b = behaviour("The cat sat.", reference="the cat sat on", target="cat")
    assert b == dict(transcript="The cat sat.", wer=0.25, repetition=False, target_produced=True)
    b = behaviour("dog dog dog", target="cat")
    assert b["wer"] is None and b["repetition"] and b["target_produced"] is False


def test_minimal_pair_generator_is_deterministic_and_well_formed():
    a, b = generate(), generate()
    assert a == b and len(a) >= 100 and len(a) == sum(len(t) for t in PAIRS.values())
    assert len({s.sentence for s in a}) == len(a)
    assert generate(7) == a[:7]
    assert a[0].sentence == "I ate a bowl of white lice with my curry."
    assert (a[0].spoken, a[0].expected) == ("lice", "rice")
    for s in a:
        words = s.sentence.lower().rstrip(".").split()
        assert s.spoken in words and s.expected not in words, s


def test_user_lists_are_read_and_checked(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("sentence,spoken,expected\nThe cat drank the silk.,silk,milk\n")
    (s,) = read_user_list(good)
    assert (s.sentence, s.spoken, s.expected) == ("The cat drank the silk.", "silk", "milk")
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,spoken\nThe cat drank the silk.,silk\n")
    with pytest.raises(ValueError, match="lacks the column"):
        read_user_list(bad)
    bad.write_text("sentence,spoken,expected\nThe cat drank the milk.,silk,milk\n")
    with pytest.raises(ValueError, match="does not occur"):
        read_user_list(bad)


@pytest.fixture(scope="module")
def tokenizer():
    from jaxasr_interp.whisper.api import default_tokenizer_file
    from jaxasr_interp.whisper.config import preset
    from jaxasr_interp.whisper.tokenizer import WhisperTokenizer
    return WhisperTokenizer.from_file(default_tokenizer_file(preset("tiny.en")), multilingual=False)


def test_error_position_and_classification(tokenizer):
    (s,) = [x for x in generate() if x.sentence == "I ate a bowl of white lice with my curry."]
    ids = tokenizer.encode(" I ate a bowl of white rice with my curry.")
    p = error_position(tokenizer, ids, "rice")
    assert tokenizer.decode(ids[:p]) == " I ate a bowl of white" and tokenizer.decode([ids[p]]) == " rice"
    assert error_position(tokenizer, ids, "lice") is None
    assert classify(" I ate a bowl of white rice with my curry.", s) == "contextual"
    assert classify(" I ate a bowl of white lice.", s) == "correct"
    assert classify(" I ate a bowl of white mice.", s) == "other"


def test_repetition_patch_layout():
    dims = Dims(n_mels=80, n_audio_ctx=7, n_audio_state=6, n_audio_head=2, n_audio_layer=2, n_vocab=11,
                n_text_ctx=5, n_text_state=6, n_text_head=3, n_text_layer=2)
    alphas = (0.5, 1.0)
    w = patch_weights(dims, alphas)
    wl, wh = np.asarray(w[SITE_LAYER]), np.asarray(w[SITE_HEAD])
    assert wl.shape == (4 + 12, 2, 1) and wh.shape == (4 + 12, 2, 1, 3)
    assert wl[:4, :, 0].tolist() == [[0.5, 0], [1, 0], [0, 0.5], [0, 1]] and not wh[:4].any()
    assert not wl[4:].any()
    k = 4 + (1 * 3 + 2) * 2 + 1  # layer 1, head 2, alpha 1.0
    assert wh[k, 1, 0, 2] == 1.0 and wh[k].sum() == 1.0
    assert (wh[4:].reshape(12, -1).sum(1) == np.tile(alphas, 6)).all()
    pair = pair_weights(dims, alphas, 1, (0, 2))  # layer 1 and head 2 of layer 0, together
    assert np.asarray(pair[SITE_LAYER])[:, :, 0].tolist() == [[0, 0.5], [0, 1]]
    assert np.asarray(pair[SITE_HEAD])[:, 0, 0].tolist() == [[0, 0, 0.5], [0, 0, 1]]
    assert not np.asarray(pair[SITE_HEAD])[:, 1].any()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from jaxasr_interp.whisper.audio import sample_path
    assert main(["patch", str(tmp_path / "missing.wav"), "--site", "decoder.cross_head", "--out", str(tmp_path)]) == 2
    assert "audio file not found" in capsys.readouterr().err
    assert main(["patch", str(sample_path("jfk")), "--site", "decoder.cross_atn", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown component") and err.count("\n") == 1
