"""CLIP byte-level BPE tokenizer: turns text queries into the int32 ids the text tower reads.

OWL-ViT and OWLv2 use OpenAI CLIP's tokenizer unchanged (spec §2.2): clean the text (ftfy, HTML
unescape twice, collapse whitespace, lowercase), split it with CLIP's regex, map every UTF-8 byte
to a printable character, run byte-pair merging with a `</w>` end-of-word marker, and look the
pieces up in a 49,408-entry vocabulary. A query becomes `[SOT] + bpe + [EOT]`, zero-padded to the
16 text positions the checkpoints were trained with (spec §1.4).

Ids are reproduced faithfully, with one deliberate difference on over-long queries. The official
code cuts `SOT + bpe + EOT` to 16 ids, which drops EOT when a query has more than 14 BPE tokens;
the text tower then pools at SOT, and every such query collapses to one and the same embedding.
Here a query that does not fit raises `QueryTooLongError`; `truncate=True` keeps the first
`context_length - 2` BPE tokens and always ends with EOT. `tokenize` stops reading a query after
`context_length + 1` BPE tokens (all it needs to fill a row or know that the query does not fit),
so a huge text costs its cleaning, not megabytes of byte-pair merging.

Padding caveat: id 0 is both the padding id and the BPE id of "!" (the first byte token; a
word-final "!" is the separate token "!</w>", id 256, but "!" inside a punctuation run such as
'!"#' comes out as id 0). The official text tower treats every id 0 as padding (its attention
mask is `id > 0`), so such a "!" is masked out as if it were padding. We keep the ids as CLIP
produces them (faithful) and only note the quirk here; the model decides what to mask.

The vocabulary file `bpe_simple_vocab_16e6.txt.gz` ships in `owl/assets/` (MIT, OpenAI; see
`owl/assets/LICENSE-clip-bpe.txt`).
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
from collections.abc import Sequence

import ftfy
import numpy as np
import regex

from owl.models.configs import CONTEXT_LENGTH, VOCAB_SIZE

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = VOCAB_SIZE - 2  # 49406
EOT_ID = VOCAB_SIZE - 1  # 49407
PAD_ID = 0

_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_END_OF_WORD = "</w>"
_NUM_BYTES = 256
# 49408 = 256 byte tokens + 256 byte+</w> tokens + merges + SOT + EOT.
_NUM_MERGES = VOCAB_SIZE - 2 * _NUM_BYTES - 2  # 48894
_BPE_CACHE_SIZE = 1 << 16
_MAX_QUERY_REPR = 80

# CLIP's pre-tokenizer: the special tokens, English contractions, runs of letters, single digits,
# and runs of anything else that is neither whitespace, letter nor digit. Whitespace is dropped.
_SPLIT_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)


class QueryTooLongError(ValueError):
    """A text query has more BPE tokens than fit between SOT and EOT.

    Attributes:
      text: the query as given.
      num_tokens: its number of BPE tokens (without SOT/EOT), or the number read before the
        tokenizer stopped (then `exact` is False and the query has more).
      limit: the most BPE tokens that fit (`context_length - 2`).
      exact: whether `num_tokens` is the whole count.
    """

    def __init__(
        self,
        text: str,
        num_tokens: int,
        limit: int,
        index: int | None = None,
        *,
        exact: bool = True,
    ) -> None:
        self.text = text
        self.num_tokens = num_tokens
        self.limit = limit
        self.exact = exact
        shown = text if len(text) <= _MAX_QUERY_REPR else text[: _MAX_QUERY_REPR - 3] + "..."
        where = f"query {index} " if index is not None else "query "
        super().__init__(
            f"{where}{shown!r} has {self.count} BPE tokens, but at most {limit} fit in the "
            f"{limit + 2}-token text context (SOT + tokens + EOT); shorten it or pass "
            f"truncate=True to keep its first {limit} tokens."
        )

    @property
    def count(self) -> str:
        """The token count as words: "15", or "more than 16" when the tokenizer stopped early."""
        return str(self.num_tokens) if self.exact else f"more than {self.num_tokens - 1}"


def byte_to_char() -> dict[int, str]:
    """Returns CLIP's (GPT-2's) reversible map from byte values to printable characters.

    Bytes that are printable Latin-1 characters ("!".."~", "¡".."¬", "®".."ÿ") map to themselves;
    the remaining 68 bytes (controls, space, NBSP, soft hyphen) map, in increasing byte order, to
    U+0100, U+0101, ... so that no byte becomes whitespace or a control character.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)}
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    mapping: dict[int, str] = {}
    next_free = _NUM_BYTES
    for byte in range(_NUM_BYTES):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(next_free)
            next_free += 1
    return mapping


def clean_text(text: str) -> str:
    """Applies CLIP's text cleaning: ftfy, HTML-unescape twice, collapse whitespace, lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


def _read_merges() -> list[tuple[str, str]]:
    """Reads the 48,894 merge rules from the packaged vocabulary file (first line is a header)."""
    resource = importlib.resources.files("owl").joinpath("assets", _VOCAB_FILE)
    try:
        lines = gzip.decompress(resource.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise RuntimeError(
            f"cannot read the CLIP vocabulary {resource}: {err}; reinstall owl to restore it"
        ) from err
    merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
    if len(merges) != _NUM_MERGES or any(len(pair) != 2 for pair in merges):
        raise RuntimeError(
            f"CLIP vocabulary {resource} is damaged: expected {_NUM_MERGES} merge lines of two "
            "symbols each after the header; reinstall owl to restore it"
        )
    return merges  # type: ignore[return-value]


class ClipTokenizer:
    """OpenAI CLIP's byte-level BPE tokenizer (49,408 ids; SOT 49406, EOT 49407, padding 0).

    Build one with `get_tokenizer()`: loading the vocabulary takes a fraction of a second, and the
    shared instance keeps its BPE cache warm across calls.
    """

    def __init__(self) -> None:
        merges = _read_merges()
        self._byte_to_char = byte_to_char()
        # Byte tokens in the order CLIP lists them, which is the code-point order of their
        # characters: the printable bytes first, then the remapped ones.
        byte_chars = sorted(self._byte_to_char.values())
        symbols = byte_chars + [c + _END_OF_WORD for c in byte_chars]
        symbols += [first + second for first, second in merges]
        symbols += [SOT_TOKEN, EOT_TOKEN]
        if len(symbols) != VOCAB_SIZE:
            raise RuntimeError(f"CLIP vocabulary has {len(symbols)} entries, expected {VOCAB_SIZE}")
        self._id_of: dict[str, int] = {symbol: i for i, symbol in enumerate(symbols)}
        self._merge_rank: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        char_to_byte = {c: b for b, c in self._byte_to_char.items()}
        # Bytes of every id for decoding; the end-of-word marker becomes a space.
        self._bytes_of: list[bytes] = []
        for symbol in symbols[: VOCAB_SIZE - 2]:
            word_end = symbol.endswith(_END_OF_WORD)
            body = symbol[: -len(_END_OF_WORD)] if word_end else symbol
            self._bytes_of.append(
                bytes(char_to_byte[c] for c in body) + (b" " if word_end else b"")
            )
        self._bytes_of += [b"", b""]  # SOT and EOT decode to nothing.
        self._piece_ids = functools.lru_cache(maxsize=_BPE_CACHE_SIZE)(self._piece_ids_uncached)

    def _piece_ids_uncached(self, piece: str) -> tuple[int, ...]:
        """BPE ids of one pre-tokenized piece (a byte-mapped string without whitespace)."""
        if piece in (SOT_TOKEN, EOT_TOKEN):
            return (self._id_of[piece],)
        word = list(piece[:-1]) + [piece[-1] + _END_OF_WORD]
        rank = self._merge_rank
        while len(word) > 1:
            # The adjacent pair with the lowest merge rank is merged everywhere, left to right.
            best = min(
                zip(word, word[1:], strict=False), key=lambda pair: rank.get(pair, _NUM_MERGES)
            )
            if best not in rank:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(self._id_of[symbol] for symbol in word)

    def encode(self, text: str, *, max_tokens: int | None = None) -> list[int]:
        """Returns the BPE ids of `text` after CLIP cleaning, without SOT/EOT.

        A literal "<|startoftext|>" or "<|endoftext|>" in the text becomes that special id, as in
        the original tokenizer. With `max_tokens`, stops once that many ids are found and returns
        the first `max_tokens` (the rest of the text is never split or merged).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}: {text!r}")
        ids: list[int] = []
        for match in _SPLIT_PATTERN.finditer(clean_text(text)):
            piece = "".join(self._byte_to_char[b] for b in match.group().encode("utf-8"))
            ids.extend(self._piece_ids(piece))
            if max_tokens is not None and len(ids) >= max_tokens:
                return ids[:max_tokens]
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Turns ids back into (cleaned) text; words are separated by single spaces.

        SOT is skipped and decoding stops at the first EOT, so a row of `tokenize`'s output decodes
        to its query (its zero padding lies after EOT). Outside such a row, id 0 decodes to "!".
        Invalid UTF-8 (an id sequence cut inside a character) becomes U+FFFD.
        """
        chunks: list[bytes] = []
        for raw in np.asarray(ids).reshape(-1).tolist():
            token_id = int(raw)
            if not 0 <= token_id < VOCAB_SIZE:
                raise ValueError(f"token id {token_id} is outside the vocabulary [0, {VOCAB_SIZE})")
            if token_id == EOT_ID:
                break
            chunks.append(self._bytes_of[token_id])
        return b"".join(chunks).decode("utf-8", errors="replace").strip()

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        context_length: int = CONTEXT_LENGTH,
        truncate: bool | str = False,
    ) -> np.ndarray:
        """Tokenizes queries into the text tower's input layout.

        Args:
          texts: the queries; a single str is treated as one query.
          context_length: ids per row; the official checkpoints need 16.
          truncate: if False, a query with more than `context_length - 2` BPE tokens raises
            `QueryTooLongError`. If True, its first `context_length - 2` BPE tokens are kept and
            followed by EOT (unlike the official code, which drops EOT instead). "official" cuts
            `[SOT, *bpe, EOT]` to `context_length` ids as the official code does (EOT dropped;
            what the official evaluator embeds, spec §1.4).

        Returns:
          int32 array [len(texts), context_length]: SOT, the BPE ids, EOT, then zeros.

        Raises:
          QueryTooLongError: a query is too long and `truncate` is False.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError(
                f"context_length must be at least 2 (SOT and EOT), got {context_length}"
            )
        if truncate not in (False, True, "official"):
            raise ValueError(f"truncate must be False, True or 'official', got {truncate!r}")
        limit = context_length - 2
        out = np.full((len(texts), context_length), PAD_ID, dtype=np.int32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"query {row} must be a str, got {type(text).__name__}: {text!r}")
            ids = self.encode(text, max_tokens=context_length + 1)
            if len(ids) > limit and truncate == "official":
                out[row] = [SOT_ID, *ids[: context_length - 1]]
                continue
            if len(ids) > limit:
                if not truncate:
                    exact = len(ids) <= context_length  # else it stopped reading
                    raise QueryTooLongError(text, len(ids), limit, index=row, exact=exact)
                ids = ids[:limit]
            out[row, : len(ids) + 2] = [SOT_ID, *ids, EOT_ID]
        return out


@functools.cache
def get_tokenizer() -> ClipTokenizer:
    """Returns the process-wide `ClipTokenizer` (built on first use)."""
    return ClipTokenizer()


def tokenize(
    texts: Sequence[str], *, context_length: int = CONTEXT_LENGTH, truncate: bool | str = False
) -> np.ndarray:
    """Tokenizes queries with the shared tokenizer; see `ClipTokenizer.tokenize`."""
    return get_tokenizer().tokenize(texts, context_length=context_length, truncate=truncate)
