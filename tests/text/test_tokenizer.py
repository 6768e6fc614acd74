"""Tests for owl.text.tokenizer: ids against a transformers CLIPTokenizer reference and against
ids looked up by hand in the vocabulary file, the 16-token layout, and over-long queries."""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources

import ftfy
import numpy as np
import pytest

from owl.text import tokenizer as tok_mod
from owl.text.tokenizer import (
    EOT_ID,
    PAD_ID,
    SOT_ID,
    VOCAB_SIZE,
    ClipTokenizer,
    QueryTooLongError,
    get_tokenizer,
    tokenize,
)

NUM_MERGES = 48894


@functools.cache
def _merge_lines() -> list[str]:
    data = importlib.resources.files("owl").joinpath("assets", "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(data.read_bytes()).decode("utf-8").split("\n")
    assert lines[0].endswith("#version: 0.2")
    return lines[1 : 1 + NUM_MERGES]


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    """transformers' CLIPTokenizer built offline from the same merges (see owl.testing)."""
    pytest.importorskip("transformers")
    from owl.testing import build_transformers_tokenizer

    hf = build_transformers_tokenizer(tmp_path_factory.mktemp("hf_clip_tokenizer"))
    assert len(hf) == VOCAB_SIZE
    return hf


def _clip_clean(text: str) -> str:
    """CLIP's cleaning as the spec spells it: ftfy, HTML-unescape twice, strip, collapse
    whitespace, lowercase with Python's str.lower."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def _hf_ids(hf, text: str) -> list[int]:
    # transformers 5.x's CLIPTokenizer is the `tokenizers`-backed class; its normaliser is only
    # NFC + collapse whitespace + Rust char-wise lowercase. That differs from CLIP's cleaning on
    # three input classes seen here: no ftfy.fix_text (mojibake, ligatures, curly quotes,
    # full-width letters), no HTML unescaping ("&amp;"), and no Greek final-sigma rule in
    # lowercasing ("ΣΑΣ" -> "σας" in Python, "σασ" in Rust). So the reference gets CLIP's cleaning
    # pre-applied; its own normaliser is then a no-op and it checks the split and the BPE. (One
    # class is left out: an entity that unescapes to a non-NFC sequence after ftfy ran, e.g.
    # "e&amp;#769;"; CLIP keeps it decomposed, HF's NFC composes it.)
    return hf(_clip_clean(text), add_special_tokens=False)["input_ids"]


VARIED_TEXTS = [
    "a photo of a cat",
    "A PHOTO OF A CAT",
    "Hello, World!!",
    "don't",
    "I'm sure they'll say we've done it, you'd think she's right",
    "'s 't 're 've 'm 'll 'd",
    "O'Neill's rock'n'roll",
    "state-of-the-art",
    "e-mail co-operation -- dash",
    "well...   ok?!",
    "wow!!!",
    "!",
    '!"#$%&()*+',
    "",
    "   ",
    "\t\n  tabs\tand\nnewlines  ",
    "multiple     spaces    here",
    "café naïve résumé",
    "Crème Brûlée",
    "cafÃ©",  # mojibake, repaired by ftfy
    "e\u0301",  # combining accent, composed by ftfy's NFC
    "東京タワー",
    "北京烤鸭",
    "한국어 텍스트",
    "Ελληνικά ΣΑΣ",
    "русский текст",
    "עברית",
    "العربية",
    "हिन्दी",
    "🐱 cat emoji 👍🏽",
    "👨\u200d👩\u200d👧\u200d👦 family",
    "🇯🇵 flag",
    "12345",
    "3.14159",
    "1,000,000 dollars",
    "2024-06-01T12:00:00Z",
    "½ cup ¾",
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 300,
    "the quick brown fox jumps over the lazy dog " * 3,
    "&amp;",
    "fish &amp; chips",
    "&lt;b&gt;bold&lt;/b&gt;",
    "&amp;amp;",
    "&quot;quoted&quot; &#39;single&#39;",
    "“curly quotes” and ‘single’",
    "ﬁsh ﬂour",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ",
    "https://example.com/path?q=1&x=2",
    "user@example.com #hashtag @mention",
    "C++ and C#",
    "$100 (approx.) [sic] {braces}",
    "arctic_(type_of_shoe)",
    "a <|endoftext|> b",
    "İstanbul straße",
    "non\u00a0breaking space",
    "zero\u200bwidth",
    "ALL CAPS WITH Numbers 42",
    "a photo of the small traffic light.",
]


def test_enough_varied_texts():
    assert len(VARIED_TEXTS) >= 50
    assert len(set(VARIED_TEXTS)) == len(VARIED_TEXTS)


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_encode_matches_transformers_reference(hf_reference, text):
    assert get_tokenizer().encode(text) == _hf_ids(hf_reference, text)


def test_tokenize_matches_transformers_reference_with_special_tokens(hf_reference):
    texts = [t for t in VARIED_TEXTS if len(_hf_ids(hf_reference, t)) <= 14]
    assert len(texts) > 30
    out = tokenize(texts)
    assert out.dtype == np.int32 and out.shape == (len(texts), 16)
    for row, text in zip(out, texts, strict=True):
        ref = hf_reference(_clip_clean(text))["input_ids"]
        assert ref[0] == SOT_ID and ref[-1] == EOT_ID
        np.testing.assert_array_equal(row, ref + [PAD_ID] * (16 - len(ref)))


def test_special_ids_match_reference(hf_reference):
    assert (SOT_ID, EOT_ID, PAD_ID, VOCAB_SIZE) == (49406, 49407, 0, 49408)
    assert hf_reference.bos_token_id == SOT_ID
    assert hf_reference.eos_token_id == EOT_ID


# --- ids derived by hand from the vocabulary file ---------------------------------------------


def _hand_id(symbol: str) -> int:
    """Id of a vocabulary symbol by the documented layout: printable ASCII byte c is ord(c) - 33,
    the same with "</w>" is 256 more, a merged symbol is 512 + its merge line."""
    base = symbol.removesuffix("</w>")
    if len(base) == 1 and "!" <= base <= "~":
        return ord(base) - 33 + (256 if symbol.endswith("</w>") else 0)
    return 512 + [line.replace(" ", "") for line in _merge_lines()].index(symbol)


@pytest.mark.parametrize(
    ("text", "symbols"),
    [
        ("a photo of a cat", ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]),
        ("Hello, World!!", ["hello</w>", ",</w>", "world</w>", "!!</w>"]),
        ("don't", ["don</w>", "'t</w>"]),
        ("fish &amp; chips", ["fish</w>", "&</w>", "chips</w>"]),
        ("2024", ["2</w>", "0</w>", "2</w>", "4</w>"]),
        ("!", ["!</w>"]),
        ("café", ["cafÃ©</w>"]),  # "é" is UTF-8 C3 A9, i.e. the byte characters "Ã" and "©"
    ],
)
def test_encode_matches_hand_lookup(text, symbols):
    assert get_tokenizer().encode(text) == [_hand_id(s) for s in symbols]


def test_hand_lookup_values():
    # Anchors of the layout itself: "!" is id 0 (also the padding id), "a</w>" is 256 + 64.
    assert _hand_id("!") == 0
    assert _hand_id("a</w>") == 320
    assert _hand_id("in") == 512  # the first merge line is "i n"


# --- layout, errors, decoding ------------------------------------------------------------------


def test_row_layout_sot_eot_and_zero_padding():
    out = tokenize(["a photo of a cat"])
    expected = [SOT_ID, 320, _hand_id("photo</w>"), _hand_id("of</w>"), 320, _hand_id("cat</w>")]
    expected += [EOT_ID] + [0] * 9
    np.testing.assert_array_equal(out, np.array([expected], dtype=np.int32))


def test_empty_string():
    np.testing.assert_array_equal(tokenize([""])[0], [49406, 49407] + [0] * 14)


def test_single_string_is_one_query_and_context_length():
    np.testing.assert_array_equal(tokenize("a", context_length=4), [[SOT_ID, 320, EOT_ID, 0]])
    assert tokenize([], context_length=16).shape == (0, 16)


def test_exactly_fourteen_tokens_fit():
    out = tokenize(["a " * 14])
    np.testing.assert_array_equal(out[0], [SOT_ID] + [320] * 14 + [EOT_ID])


def test_over_long_query_raises_with_count_and_limit():
    with pytest.raises(QueryTooLongError) as info:
        tokenize(["ok", "a " * 15])
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "query 1 " in message
    assert "'a a a" in message
    assert "has 15 BPE tokens" in message
    assert "at most 14" in message
    assert "truncate=True" in message
    assert (info.value.num_tokens, info.value.limit) == (15, 14)


def test_over_long_query_message_shortens_huge_text():
    text = "word " * 400
    with pytest.raises(QueryTooLongError) as info:
        tokenize([text])
    message = str(info.value)
    assert "has more than 16 BPE tokens" in message  # it stopped reading after 17
    assert (info.value.num_tokens, info.value.exact) == (17, False)
    assert "..." in message
    assert len(message) < 400


def test_tokenize_stops_after_context_plus_one_tokens(monkeypatch):
    """A huge query is never byte-pair merged past context_length + 1 tokens (issue 25: 30 MB
    took 21 s and 2.27 GB): count the pieces the BPE step is asked for."""
    tok = get_tokenizer()
    seen: list[str] = []
    merge = tok._piece_ids
    monkeypatch.setattr(tok, "_piece_ids", lambda piece: seen.append(piece) or merge(piece))
    text = "zebra " * 1_000_000  # one token per word
    with pytest.raises(QueryTooLongError):
        tok.tokenize([text])
    assert len(seen) == 17
    seen.clear()
    first = tok.encode("a cat on a mat", max_tokens=3)
    assert seen == ["a", "cat", "on"]
    assert first == tok.encode("a cat on a mat")[:3] == [320, 2368, 525]


def test_truncate_keeps_eot_at_last_position(hf_reference):
    text = "the quick brown fox jumps over the lazy dog " * 3
    ref = _hf_ids(hf_reference, text)
    assert len(ref) > 14
    out = tokenize([text, "a cat"], truncate=True)
    np.testing.assert_array_equal(out[0], [SOT_ID] + ref[:14] + [EOT_ID])
    assert out[0, 15] == EOT_ID
    assert out[1, 3] == EOT_ID and out[1, 4] == 0


def test_bad_inputs():
    with pytest.raises(TypeError, match="query 1 must be a str"):
        tokenize(["a", 3])
    with pytest.raises(ValueError, match="context_length must be at least 2"):
        tokenize(["a"], context_length=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        get_tokenizer().decode([VOCAB_SIZE])


@pytest.mark.parametrize(
    "text", ["a photo of a cat", "the small traffic light", "supercalifragilisticexpialidocious"]
)
def test_decode_round_trip(text):
    tok = get_tokenizer()
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tokenize([text])[0]) == text  # SOT skipped, stops at EOT


def test_decode_non_ascii_and_punctuation():
    tok = get_tokenizer()
    assert tok.decode(tok.encode("Café, 東京!")) == "café , 東京 !"


def test_singleton_and_fresh_instance_agree():
    assert get_tokenizer() is get_tokenizer()
    assert ClipTokenizer().encode("a photo of a cat") == tok_mod.get_tokenizer().encode(
        "a photo of a cat"
    )


def test_official_truncation_drops_eot_like_the_official_code():
    tokenizer = get_tokenizer()
    long = (
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    )
    bpe = tokenizer.encode(long)
    assert len(bpe) == 15  # one word, one token: one more than fits
    row = tokenizer.tokenize([long, "car"], truncate="official")
    assert row[0].tolist() == [49406, *bpe[:15]]  # SOT, then 15 BPE ids, no EOT
    assert row[1].tolist() == tokenizer.tokenize(["car"])[0].tolist()  # short: unchanged
    with pytest.raises(ValueError, match="'cut'"):
        tokenizer.tokenize(["car"], truncate="cut")
