"""Tests for owl.text.prompts: canonicalisation as scenic's label_ops does it, and the templates."""

from __future__ import annotations

import pytest

from owl.text.prompts import (
    CLIP_BEST_PROMPT_TEMPLATES,
    CLIP_PAPER_PROMPT_TEMPLATES,
    TRAINING_PROMPT_TEMPLATES,
    canonicalize,
    expand_prompts,
)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("arctic_(type_of_shoe)", "arctic type of shoe"),  # spec example (LVIS name)
        ("itap of a cat.", "itap of a cat"),  # spec example (template period)
        ("Traffic Light", "traffic light"),
        ("  many    spaces\tand\ttabs\n", "many spaces and tabs"),
        ("t-shirt", "t-shirt"),
        ("a--b---c", "a-b-c"),
        ("-- dash --", "- dash -"),
        ("#tree", "#tree"),  # marker kept at the start
        ("#Tree#house", "#treehouse"),  # and dropped elsewhere
        ("##x", "#x"),
        ("x#", "x"),
        ("a # b", "a  b"),  # the official regex runs after strip: two spaces remain
        ("crème brûlée", "cr me br l e"),  # non-ASCII letters are not in [a-z]
        ("K", "k"),
        ("\u212a", ""),  # Kelvin sign: tf.strings.lower is ASCII-only, so it becomes a space
        ("pipe|slash/back\\slash", "pipe slash back slash"),
        ("7-up can, 2 L", "7-up can 2 l"),
        ("", ""),
    ],
)
def test_canonicalize(label, expected):
    assert canonicalize(label) == expected


def test_canonicalize_rejects_non_strings():
    with pytest.raises(TypeError, match="label must be a str"):
        canonicalize(None)  # type: ignore[arg-type]


def test_template_counts_and_membership():
    assert len(CLIP_BEST_PROMPT_TEMPLATES) == 7
    assert len(CLIP_PAPER_PROMPT_TEMPLATES) == 80
    assert len(set(CLIP_PAPER_PROMPT_TEMPLATES)) == 80
    assert len(TRAINING_PROMPT_TEMPLATES) == 81
    assert TRAINING_PROMPT_TEMPLATES[0] == "{}"
    assert TRAINING_PROMPT_TEMPLATES[1:] == CLIP_PAPER_PROMPT_TEMPLATES
    assert set(CLIP_BEST_PROMPT_TEMPLATES) <= set(CLIP_PAPER_PROMPT_TEMPLATES)
    assert all(t.count("{}") == 1 for t in TRAINING_PROMPT_TEMPLATES)


def test_exact_templates():
    assert CLIP_BEST_PROMPT_TEMPLATES == (
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    )
    assert CLIP_PAPER_PROMPT_TEMPLATES[:3] == (
        "a bad photo of a {}.",
        "a photo of many {}.",
        "a sculpture of a {}.",
    )
    assert CLIP_PAPER_PROMPT_TEMPLATES[35] == "a {} in a video game."
    assert CLIP_PAPER_PROMPT_TEMPLATES[39] == "a photo of a {}."
    assert CLIP_PAPER_PROMPT_TEMPLATES[-2:] == ("a photo of a small {}.", "a tattoo of the {}.")


def test_expand_prompts_layout_and_canonicalisation():
    names = ["arctic_(type_of_shoe)", "Cat"]
    out = expand_prompts(names, CLIP_BEST_PROMPT_TEMPLATES[:2] + ("{}",))
    assert out == [
        ["itap of a arctic type of shoe", "itap of a cat"],
        ["a bad photo of the arctic type of shoe", "a bad photo of the cat"],
        ["arctic type of shoe", "cat"],
    ]


def test_expand_prompts_bad_input():
    with pytest.raises(ValueError, match="exactly one"):
        expand_prompts(["cat"], ["no placeholder"])
    with pytest.raises(TypeError, match="not a single str"):
        expand_prompts("cat", CLIP_BEST_PROMPT_TEMPLATES)
