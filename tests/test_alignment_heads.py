"""The alignment-head finder: its measures on synthetic patterns, the published heads, and the
experiment end to end on a random model."""

import json

import numpy as np
import pytest

from jaxasr_interp.experiments import alignment_heads as ah
from jaxasr_interp.experiments import attention_window as aw
from test_attention_window import random_model


def diagonal(n_tokens=12, n_frames=60, width=1.5):
    """Attention that moves steadily through the frames: token t peaks at frame 5t."""
    frames = np.arange(n_frames)
    centres = np.linspace(2, n_frames - 3, n_tokens)
    p = np.exp(-0.5 * ((frames[None] - centres[:, None]) / width) ** 2)
    return p / p.sum(-1, keepdims=True)


def test_a_diagonal_pattern_scores_one_and_a_shuffled_one_about_zero():
    p = diagonal()
    scores = ah.monotonicity(p)
    assert scores["rho_argmax"] == pytest.approx(1.0) and scores["rho_com"] == pytest.approx(1.0)
    assert scores["forward"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    shuffled = np.stack([p[rng.permutation(len(p))] for _ in range(400)])  # [400, T, S]: batched rows
    null = ah.monotonicity(shuffled)
    assert abs(null["rho_argmax"].mean()) < 0.05 and abs(null["rho_com"].mean()) < 0.05
    assert null["forward"].mean() == pytest.approx(0.5, abs=0.05)
    reverse = ah.monotonicity(p[::-1])
    assert reverse["rho_argmax"] == pytest.approx(-1.0) and reverse["forward"] == 0.0


def test_follows_audio_tells_sound_from_position():
    p = diagonal()
    delayed = np.concatenate([np.zeros((len(p), 7)), p], axis=-1)  # the sound 7 frames later
    assert ah.follows_audio(p, delayed, delay=7, tol=0) == 1.0
    positional = np.concatenate([p, np.zeros((len(p), 7))], axis=-1)  # the same frames as before
    assert ah.follows_audio(p, positional, delay=7, tol=3) == 0.0


def test_spearman_handles_ties_and_constants():
    assert ah.spearman(np.array([5, 5, 5, 5]), np.arange(4)) == 0.0
    assert ah.spearman(np.array([1, 1, 2, 3]), np.arange(4)) == pytest.approx(0.9486833)
    stacked = ah.spearman(np.array([[0, 1, 2], [2, 1, 0]]), np.arange(3))
    np.testing.assert_allclose(stacked, [1.0, -1.0])


def test_published_heads_decode_to_openais_lists():
    # the same heads transformers lists in convert_openai_to_hf.py (_WHISPER_ALIGNMENT_HEADS)
    tiny = ah.published_heads("tiny.en", 4, 6)
    assert [tuple(x) for x in np.argwhere(tiny)] == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    base = ah.published_heads("base", 6, 8)
    assert [tuple(x) for x in np.argwhere(base)] == [(3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6)]
    assert ah.published_heads("random", 2, 2) is None


def test_overlap_against_a_random_ranking():
    published = np.zeros((2, 3), bool)
    published[1, [0, 2]] = True
    o = ah.overlap([(1, 0), (0, 1), (1, 2), (0, 0), (0, 2), (1, 1)], published)
    assert o["in_top_m"] == 1 and o["m"] == 2 and o["published_ranks"] == [1, 3]
    assert o["random_expected"] == pytest.approx(4 / 6, abs=1e-4)
    assert o["p_at_least"] == pytest.approx(1 - 6 / 15)  # P(no published head in a random top 2)
    assert o["auc"] == pytest.approx(7 / 8)  # of the 2 x 4 (published, other) pairs, 7 put the published higher
    assert ah.overlap([(1, 0), (1, 2), (0, 0), (0, 1), (0, 2), (1, 1)], published)["auc"] == 1.0


def test_run_writes_the_documented_schema_and_is_bit_identical_on_rerun(tmp_path):
    model, clips = random_model(), aw.speech_clips()[1:3]
    first = ah.run(model, clips, max_new_tokens=5, min_tokens=3, n_boot=50, out=tmp_path / "a")
    ah.run(model, clips, max_new_tokens=5, min_tokens=3, n_boot=50, out=tmp_path / "b")
    a, b = (tmp_path / d / "alignment_heads_random.json" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    saved = json.loads(a.read_text())
    assert saved == json.loads(json.dumps(first))
    assert saved["n"] == 2 and (saved["n_layer"], saved["n_head"]) == (2, 2)
    assert all(c["tokens"] == 5 and c["frames"] == -(-len(clip.audio) // 320)
               for c, clip in zip(saved["clips"], clips))
    for m in ah.MEASURES:
        head = saved["heads"][m][1][0]
        assert set(head) == {"value", "lo", "hi", "n"} and head["lo"] <= head["value"] <= head["hi"]
        assert m == "follows" or np.shape(saved["shuffled"][m]) == (2, 2)
        assert sorted(map(tuple, saved["ranking"][m])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert saved["published"] is None
    assert "| 1 | " in ah.markdown(saved)
