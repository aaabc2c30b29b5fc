"""Text data: tokenizing, vocabularies, padding collation and a text-classification dataset.

>>> from forgeml.data import DataLoader
>>> from forgeml.data.text import PadCollate, TextClassificationDataset, Vocabulary
>>> vocab = Vocabulary.build(["the cat sat", "the dog ran"], min_freq=1)
>>> vocab.encode("The cat ran away", add_cls=True)     # <cls> the cat ran <unk>
[2, 3, 4, 6, 1]
>>> vocab.decode([3, 4, 0, 0])
'the cat'
>>> ds = TextClassificationDataset(["good film", "bad film", "great"], ["pos", "neg", "pos"])
>>> ids, padding_mask, labels = next(iter(DataLoader(ds, batch_size=3)))
>>> ids.shape, padding_mask.dtype, labels.tolist(), ds.classes
((3, 2), forgeml.bool, [1, 0, 1], ['neg', 'pos'])

* :func:`tokenize`: the word tokenizer (lowercase; runs of letters and digits).
* :class:`Vocabulary` (word level) and :class:`CharVocabulary` (character level):
  built from a corpus with ``min_freq`` / ``max_size``; special tokens ``<pad>``
  (id 0), ``<unk>`` (id 1), ``<cls>`` (id 2); saved as JSON next to a checkpoint.
* :class:`HFTokenizerAdapter`: the same interface over a Hugging Face
  ``tokenizers.Tokenizer`` (``pip install tokenizers``).
* :class:`PadCollate`: a ``collate_fn`` that pads ``(token_ids, label)`` items to
  ``(ids, padding_mask, labels)``; ``padding_mask`` is True at padding, PyTorch's
  ``key_padding_mask`` convention.
* :class:`TextClassificationDataset`: texts and labels, encoded once; from lists or
  ``from_csv``.
"""

from __future__ import annotations

import collections
import csv
import json
import operator
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ..ops.creation import from_numpy
from ..tensor import Tensor
from .dataset import Dataset, _check_in_range, _overrides_getitem, index_array

__all__ = [
    "CLS_TOKEN",
    "CharVocabulary",
    "HFTokenizerAdapter",
    "PAD_TOKEN",
    "PadCollate",
    "SPECIAL_TOKENS",
    "TextClassificationDataset",
    "UNK_TOKEN",
    "Vocabulary",
    "pad_sequences",
    "tokenize",
]

PAD_TOKEN, UNK_TOKEN, CLS_TOKEN = "<pad>", "<unk>", "<cls>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN)
_FORMAT = "forgeml.vocabulary"
_VERSION = 1
_WORD = re.compile(r"[^\W_]+")  # a run of Unicode letters and digits


def tokenize(text: str, lower: bool = True) -> list[str]:
    """Split ``text`` into words: lowercase it, then keep each run of letters and digits.

    Everything else (spaces, punctuation, symbols, the underscore) separates
    words and is dropped. Numbers are kept as words; letters and digits next to
    each other stay together (``"mp3"``), and any script's letters count
    (``"café"``, ``"日本語"``).

    >>> tokenize("Don't pay $1,000 for an MP3-player!")
    ['don', 't', 'pay', '1', '000', 'for', 'an', 'mp3', 'player']
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    return _WORD.findall(text.lower() if lower else text)


def _as_id_list(ids) -> list[int]:
    """A 1-D sequence of token ids (list, tuple, NumPy array or ForgeML tensor) as a list of ints."""
    if isinstance(ids, Tensor):
        ids = np.asarray(ids)
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"expected a 1-D sequence of token ids, got shape {list(ids.shape)}")
        if ids.size and ids.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
        return ids.tolist()
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"token ids must be integers, got {type(i).__name__} {i!r}")
        out.append(int(i))
    return out


def _finish(ids: list[int], cls_id: int | None, add_cls: bool, max_length: int | None) -> list[int]:
    if add_cls:
        if cls_id is None:
            raise ValueError("add_cls=True, but this tokenizer has no classification token")
        ids = [cls_id, *ids]
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
        ids = ids[:max_length]
    return ids


class Vocabulary:
    """A word-level (or character-level) vocabulary: a fixed mapping between tokens and integer ids.

    Ids ``0, 1, 2`` are the special tokens ``<pad>``, ``<unk>``, ``<cls>`` (then any
    ``extra_specials``); the other tokens follow in the order given. Build one from
    a corpus with :meth:`build`, which orders tokens by frequency (most frequent
    first), ties broken lexicographically, so the same corpus always gives the
    same ids.

    Args:
        tokens: the ordinary tokens, in id order (specials are prepended; a token
            equal to a special or listed twice is an error).
        level: ``"word"`` (texts split by ``tokenizer``) or ``"char"`` (each
            character is a token).
        lower: lowercase texts before splitting. Default: True for words (what
            :func:`tokenize` does), False for characters.
        extra_specials: more special tokens, e.g. ``("<sep>", "<mask>")``, given ids
            3, 4, ... :meth:`build` never counts them as ordinary tokens.
        tokenizer: for ``level="word"``, a callable ``str -> list[str]`` to use
            instead of :func:`tokenize` (it gets the text lowercased when
            ``lower``). A custom tokenizer is not saved by :meth:`save`: pass it
            again to :meth:`load`.

    ``vocab[token]`` is the token's id, or ``unk_id`` for a token not in the
    vocabulary; ``token_to_id`` returns ``None`` for one (as Hugging Face's does).
    """

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        level: str = "word",
        lower: bool | None = None,
        extra_specials: Sequence[str] = (),
        tokenizer: Callable[[str], list[str]] | None = None,
    ) -> None:
        if level not in ("word", "char"):
            raise ValueError(f"level must be 'word' or 'char', got {level!r}")
        if tokenizer is not None:
            if level == "char":
                raise ValueError("tokenizer= applies to level='word'; a character vocabulary splits into characters")
            if not callable(tokenizer):
                raise TypeError(f"tokenizer must be callable, got {type(tokenizer).__name__}")
        if isinstance(extra_specials, str):
            raise TypeError("extra_specials must be a sequence of strings, not a single string")
        self.level = level
        self.lower = (level == "word") if lower is None else bool(lower)
        self.tokenizer = tokenizer
        self.specials: tuple[str, ...] = (*SPECIAL_TOKENS, *extra_specials)
        itos = list(self.specials)
        stoi: dict[str, int] = {}
        for i, tok in enumerate(itos):
            if not isinstance(tok, str) or not tok:
                raise TypeError(f"special tokens must be non-empty strings, got {tok!r}")
            if tok in stoi:
                raise ValueError(f"special token {tok!r} is listed twice")
            stoi[tok] = i
        for tok in tokens:
            if not isinstance(tok, str) or not tok:
                raise TypeError(f"tokens must be non-empty strings, got {tok!r}")
            if tok in stoi:
                what = "a special token" if stoi[tok] < len(self.specials) else "listed twice"
                raise ValueError(f"token {tok!r} is {what}")
            stoi[tok] = len(itos)
            itos.append(tok)
        self._itos = itos
        self._stoi = stoi
        self.counts: dict[str, int] | None = None  # corpus frequencies of the tokens, when built by build()

    # -- building --------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        corpus: Iterable[str],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        level: str = "word",
        lower: bool | None = None,
        extra_specials: Sequence[str] = (),
        tokenizer: Callable[[str], list[str]] | None = None,
    ) -> Vocabulary:
        """The vocabulary of the texts in ``corpus``.

        Tokens seen fewer than ``min_freq`` times are left out (they will encode
        as ``<unk>``). ``max_size`` caps ``len(vocab)``, special tokens included,
        keeping the most frequent tokens. Order: frequency, highest first; equal
        frequencies in lexicographic (code point) order.
        """
        if isinstance(corpus, str):
            raise TypeError("corpus must be an iterable of texts, not a single string (wrap it in a list)")
        if isinstance(min_freq, bool) or not isinstance(min_freq, (int, np.integer)) or min_freq < 1:
            raise ValueError(f"min_freq must be a positive integer, got {min_freq!r}")
        splitter = cls(level=level, lower=lower, extra_specials=extra_specials, tokenizer=tokenizer)
        n_specials = len(splitter.specials)
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < n_specials
        ):
            raise ValueError(
                f"max_size counts the {n_specials} special tokens too, so it must be an integer >= {n_specials}; "
                f"got {max_size!r}"
            )
        counts: collections.Counter = collections.Counter()
        for i, text in enumerate(corpus):
            if not isinstance(text, str):
                raise TypeError(f"corpus item {i} is a {type(text).__name__}, expected a str")
            counts.update(splitter.split(text))
        for tok in splitter.specials:
            counts.pop(tok, None)
        kept = sorted((tok for tok, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - n_specials]
        vocab = cls(kept, level=level, lower=lower, extra_specials=extra_specials, tokenizer=tokenizer)
        vocab.counts = {tok: counts[tok] for tok in kept}
        return vocab

    # -- ids -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token) -> bool:
        return token in self._stoi

    def __getitem__(self, token: str) -> int:
        return self._stoi.get(token, 1)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (self.level, self.lower, self._itos, self.specials) == (
            other.level,
            other.lower,
            other._itos,
            other.specials,
        )

    __hash__ = None

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def cls_id(self) -> int:
        return 2

    pad_token, unk_token, cls_token = PAD_TOKEN, UNK_TOKEN, CLS_TOKEN

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token``, or ``None`` when it is not in the vocabulary."""
        return self._stoi.get(token)

    def id_to_token(self, index: int) -> str:
        """The token of id ``index``; ``IndexError`` outside ``0 .. len(vocab) - 1``."""
        i = operator.index(index)
        if not 0 <= i < len(self._itos):
            raise IndexError(f"token id {i} is out of range for a vocabulary of {len(self._itos)} tokens")
        return self._itos[i]

    def get_itos(self) -> list[str]:
        """All tokens, in id order (a copy)."""
        return list(self._itos)

    def get_stoi(self) -> dict[str, int]:
        """The token -> id mapping (a copy)."""
        return dict(self._stoi)

    # -- encoding --------------------------------------------------------------------
    def split(self, text: str) -> list[str]:
        """``text`` as tokens (before the lookup): words or characters."""
        if not isinstance(text, str):
            raise TypeError(f"expected a str to encode, got {type(text).__name__}")
        if self.lower:
            text = text.lower()
        if self.level == "char":
            return list(text)
        if self.tokenizer is not None:
            return list(self.tokenizer(text))
        return tokenize(text, lower=False)

    def encode(self, text: str, add_cls: bool = False, max_length: int | None = None) -> list[int]:
        """The ids of ``text``'s tokens; unknown tokens become ``unk_id``.

        ``add_cls`` puts ``cls_id`` first; ``max_length`` keeps the first
        ``max_length`` ids (``<cls>`` included).
        """
        stoi = self._stoi
        return _finish([stoi.get(t, 1) for t in self.split(text)], 2, add_cls, max_length)

    def encode_batch(self, texts: Iterable[str], add_cls: bool = False, max_length: int | None = None):
        """``[encode(t, add_cls, max_length) for t in texts]``."""
        return [self.encode(t, add_cls, max_length) for t in texts]

    def decode(self, ids, skip_special: bool = True) -> str:
        """The text of ``ids`` (a list, array or 1-D tensor): words joined by spaces, characters by nothing.

        ``skip_special`` drops the special tokens (padding, ``<cls>``, ``<unk>``...).
        """
        itos, n, n_special = self._itos, len(self._itos), len(self.specials)
        tokens = []
        for i in _as_id_list(ids):
            if not 0 <= i < n:
                raise IndexError(f"token id {i} is out of range for a vocabulary of {n} tokens")
            if skip_special and i < n_special:
                continue
            tokens.append(itos[i])
        return ("" if self.level == "char" else " ").join(tokens)

    # -- saving ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready description; :meth:`from_dict` rebuilds the same vocabulary from it."""
        tok = self.tokenizer
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "level": self.level,
            "lower": self.lower,
            "specials": list(self.specials),
            "tokenizer": None
            if tok is None
            else f"{getattr(tok, '__module__', '?')}.{getattr(tok, '__qualname__', tok)}",
            "tokens": self._itos[len(self.specials) :],
        }

    @classmethod
    def from_dict(cls, data: dict, tokenizer: Callable[[str], list[str]] | None = None) -> Vocabulary:
        """The vocabulary :meth:`to_dict` described. Pass ``tokenizer`` again if one was used."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a ForgeML vocabulary: expected a dict with format={_FORMAT!r}")
        if data.get("version") != _VERSION:
            raise ValueError(f"unsupported vocabulary version {data.get('version')!r} (this ForgeML reads {_VERSION})")
        missing = [k for k in ("level", "lower", "specials", "tokens") if k not in data]
        if missing:
            raise ValueError(f"vocabulary data lacks the field(s) {', '.join(missing)}")
        specials = list(data["specials"])
        if specials[:3] != list(SPECIAL_TOKENS):
            raise ValueError(f"vocabulary specials must start with {list(SPECIAL_TOKENS)}, got {specials[:3]}")
        if data.get("tokenizer") and tokenizer is None:
            raise ValueError(
                f"this vocabulary was built with the custom tokenizer {data['tokenizer']}; pass it again as tokenizer="
            )
        target = CharVocabulary if data["level"] == "char" and cls is Vocabulary else cls
        if data["level"] != "char" and issubclass(cls, CharVocabulary):
            raise ValueError(
                f"this is a {data['level']!r}-level vocabulary; load it with Vocabulary, not {cls.__name__}"
            )
        return target(
            data["tokens"],
            level=data["level"],
            lower=data["lower"],
            extra_specials=specials[3:],
            tokenizer=tokenizer,
        )

    def save(self, path) -> None:
        """Write the vocabulary as JSON (UTF-8) to ``path``, e.g. next to a model checkpoint."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1)
        Path(os.fspath(path)).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path, tokenizer: Callable[[str], list[str]] | None = None) -> Vocabulary:
        """The vocabulary :meth:`save` wrote to ``path``."""
        path = Path(os.fspath(path))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not a JSON vocabulary file: {exc}") from None
        return cls.from_dict(data, tokenizer=tokenizer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={len(self)}, level={self.level!r}, lower={self.lower})"


class CharVocabulary(Vocabulary):
    """A character-level :class:`Vocabulary`: every character is a token; case is kept unless ``lower=True``."""

    def __init__(
        self, tokens: Iterable[str] = (), *, level: str = "char", lower: bool | None = None, extra_specials=(), **kw
    ) -> None:
        if level != "char":
            raise ValueError(f"CharVocabulary is character-level; got level={level!r} (use Vocabulary for words)")
        super().__init__(tokens, level="char", lower=lower, extra_specials=extra_specials, **kw)

    @classmethod
    def build(cls, corpus: Iterable[str], *, level: str = "char", **kwargs) -> CharVocabulary:
        """The character vocabulary of ``corpus``; see :meth:`Vocabulary.build`."""
        return super().build(corpus, level=level, **kwargs)


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "HFTokenizerAdapter needs the Hugging Face tokenizers package: pip install tokenizers"
        ) from None
    return tokenizers


class HFTokenizerAdapter:
    """A Hugging Face ``tokenizers.Tokenizer`` behind :class:`Vocabulary`'s interface.

    ``encode(text, add_cls=False, max_length=None)``, ``decode(ids, skip_special=True)``,
    ``pad_id``, ``unk_id``, ``cls_id``, ``len()``, ``token_to_id``, ``id_to_token``,
    ``save``/``load`` (the tokenizer's own JSON) behave as they do for a
    :class:`Vocabulary`, so :class:`PadCollate` and :class:`TextClassificationDataset`
    take either.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``, a path to its ``tokenizer.json``, or
            an object holding one as ``backend_tokenizer`` (a ``transformers`` fast
            tokenizer). The adapter works on a copy with the tokenizer's own padding
            and truncation turned off (PadCollate pads; ``max_length`` truncates).
        pad_token, unk_token, cls_token: the tokens to use. By default the
            tokenizer's padding token if padding was configured, else the first
            of ``[PAD]``, ``<pad>``, ``<PAD>``, ``<|pad|>`` in its vocabulary (an
            error when none is); likewise ``[UNK]``/``<unk>``/``<UNK>`` and
            ``[CLS]``/``<cls>``/``<s>``/``<CLS>`` (``None`` when absent).

    ``encode`` does not run the tokenizer's post-processor (the ``[CLS] ... [SEP]``
    template of BERT-like tokenizers); ``add_cls`` prepends the classification
    token, as for a :class:`Vocabulary`.
    """

    _PAD = ("[PAD]", "<pad>", "<PAD>", "<|pad|>")
    _UNK = ("[UNK]", "<unk>", "<UNK>")
    _CLS = ("[CLS]", "<cls>", "<s>", "<CLS>")

    def __init__(self, tokenizer, pad_token: str | None = None, unk_token: str | None = None, cls_token=None) -> None:
        tokenizers = _import_tokenizers()
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = tokenizers.Tokenizer.from_file(os.fspath(tokenizer))
        elif not isinstance(tokenizer, tokenizers.Tokenizer) and isinstance(
            getattr(tokenizer, "backend_tokenizer", None), tokenizers.Tokenizer
        ):
            tokenizer = tokenizer.backend_tokenizer
        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TypeError(
                f"HFTokenizerAdapter expects a tokenizers.Tokenizer (or the path of a tokenizer.json), "
                f"got {type(tokenizer).__name__}"
            )
        padding = tokenizer.padding
        tok = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        tok.no_padding()
        tok.no_truncation()
        self.tokenizer = tok
        if pad_token is None and padding is not None and padding.get("pad_token") is not None:
            pad_token = padding["pad_token"]
        self.pad_token = self._find("pad_token", pad_token, self._PAD, required=True)
        self.unk_token = self._find("unk_token", unk_token, self._UNK, required=False)
        self.cls_token = self._find("cls_token", cls_token, self._CLS, required=False)
        self.pad_id = tok.token_to_id(self.pad_token)
        self.unk_id = None if self.unk_token is None else tok.token_to_id(self.unk_token)
        self.cls_id = None if self.cls_token is None else tok.token_to_id(self.cls_token)

    def _find(self, name: str, given: str | None, candidates: tuple[str, ...], required: bool) -> str | None:
        if given is not None:
            if self.tokenizer.token_to_id(given) is None:
                raise ValueError(f"HFTokenizerAdapter: {name}={given!r} is not in the tokenizer's vocabulary")
            return given
        for cand in candidates:
            if self.tokenizer.token_to_id(cand) is not None:
                return cand
        if required:
            raise ValueError(
                f"HFTokenizerAdapter: the tokenizer has none of the {name.removesuffix('_token')} tokens "
                f"{', '.join(candidates)}; pass {name}= naming the one to use"
            )
        return None

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return len(self)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, index: int) -> str:
        i = operator.index(index)
        token = self.tokenizer.id_to_token(i) if i >= 0 else None
        if token is None:
            raise IndexError(f"token id {i} is out of range for a tokenizer of {len(self)} tokens")
        return token

    def encode(self, text: str, add_cls: bool = False, max_length: int | None = None) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"expected a str to encode, got {type(text).__name__}")
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return _finish(ids, self.cls_id, add_cls, max_length)

    def encode_batch(self, texts: Iterable[str], add_cls: bool = False, max_length: int | None = None):
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is a {type(t).__name__}, expected a str")
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [_finish(e.ids, self.cls_id, add_cls, max_length) for e in encodings]

    def decode(self, ids, skip_special: bool = True) -> str:
        ids = _as_id_list(ids)
        n = len(self)
        for i in ids:
            if not 0 <= i < n:
                raise IndexError(f"token id {i} is out of range for a tokenizer of {n} tokens")
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special)

    def save(self, path) -> None:
        """The tokenizer's own JSON (``tokenizer.json``), loadable by :meth:`load` or ``Tokenizer.from_file``."""
        self.tokenizer.save(os.fspath(path))

    @classmethod
    def load(cls, path, **kwargs) -> HFTokenizerAdapter:
        return cls(_import_tokenizers().Tokenizer.from_file(os.fspath(path)), **kwargs)

    def __repr__(self) -> str:
        return f"HFTokenizerAdapter(size={len(self)}, pad_token={self.pad_token!r})"


# --------------------------------------------------------------------------- padding


def _check_max_length(max_length) -> int | None:
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1
    ):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
    return None if max_length is None else int(max_length)


def _pad_ragged(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad_id: int, max_length, truncation: str):
    """Rows ``flat[starts[b] : starts[b] + lengths[b]]`` padded into ``(ids [B, T], padding_mask [B, T])``."""
    keep = lengths if max_length is None else np.minimum(lengths, max_length)
    if truncation == "left":
        starts = starts + (lengths - keep)
    width = int(keep.max()) if keep.size else 0
    positions = np.arange(width, dtype=np.intp)
    valid = positions[None, :] < keep[:, None]
    ids = np.full((len(keep), width), pad_id, dtype=np.int64)
    if flat.size:
        ids[valid] = flat[(starts[:, None] + positions[None, :])[valid]]
    return ids, ~valid


def pad_sequences(sequences, pad_id: int = 0, max_length: int | None = None, truncation: str = "right"):
    """Pad token-id sequences to ``(ids, padding_mask)`` tensors of shape ``[B, T]`` (int64 and bool).

    ``T`` is the longest sequence, or ``max_length`` when that is shorter; longer
    sequences lose their end (``truncation="right"``) or their start (``"left"``).
    ``padding_mask`` is True where ``ids`` holds padding.
    """
    if truncation not in ("right", "left"):
        raise ValueError(f"truncation must be 'right' or 'left', got {truncation!r}")
    max_length = _check_max_length(max_length)
    arrays = []
    for k, seq in enumerate(sequences):
        a = np.asarray(seq)  # lists, arrays and tensors (through Tensor.__array__)
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            what = f"shape {list(a.shape)}" if a.ndim != 1 else f"dtype {a.dtype}"
            raise TypeError(f"sequence {k} must be a 1-D sequence of integer token ids, got {what}")
        arrays.append(a.astype(np.int64, copy=False))
    lengths = np.fromiter((a.size for a in arrays), dtype=np.intp, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    ids, mask = _pad_ragged(flat, starts, lengths, int(pad_id), max_length, truncation)
    return from_numpy(ids), from_numpy(mask)


def _labels_array(labels: list) -> np.ndarray:
    values = [np.asarray(y) if isinstance(y, Tensor) else y for y in labels]
    arr = np.asarray(values)
    if arr.dtype.kind in "biu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return arr
    raise TypeError(f"labels must be numbers (class ids), got {arr.dtype} values such as {labels[0]!r}")


class PadCollate:
    """A ``collate_fn`` for :class:`~forgeml.data.DataLoader` that pads ``(token_ids, label)`` items.

    Returns ``(ids, padding_mask, labels)``: ``ids`` int64 ``[B, T]`` with ``pad_id``
    after each sequence, ``padding_mask`` bool ``[B, T]``, True at padding positions
    (PyTorch's ``key_padding_mask`` convention), ``labels`` int64 ``[B]`` (floating
    labels keep their dtype). ``T`` is the longest sequence in the batch, capped at
    ``max_length``; longer sequences are cut at the end (``truncation="right"``) or
    at the start (``"left"``). Token ids may be lists, NumPy arrays or 1-D tensors;
    labels ints or 0-d tensors. Items that are bare sequences (no label) give
    ``(ids, padding_mask)``.

    >>> ids, mask, y = PadCollate()([([5, 6, 7], 1), ([8], 0)])
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[False, False, False], [False, True, True]])
    """

    def __init__(self, pad_id: int = 0, max_length: int | None = None, truncation: str = "right") -> None:
        if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)):
            raise TypeError(f"pad_id must be an int, got {type(pad_id).__name__}")
        if truncation not in ("right", "left"):
            raise ValueError(f"truncation must be 'right' or 'left', got {truncation!r}")
        self.pad_id = int(pad_id)
        self.max_length = _check_max_length(max_length)
        self.truncation = truncation

    def __call__(self, batch):
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)) or not len(batch):
            raise ValueError("PadCollate expects a non-empty list of (token_ids, label) items")
        first = batch[0]
        labelled = isinstance(first, tuple | list) and len(first) == 2 and not _is_token_id(first[0])
        if not labelled:
            return pad_sequences(batch, self.pad_id, self.max_length, self.truncation)
        for k, item in enumerate(batch):
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise TypeError(f"PadCollate: item {k} is not a (token_ids, label) pair")
        ids, mask = pad_sequences([s for s, _ in batch], self.pad_id, self.max_length, self.truncation)
        return ids, mask, from_numpy(_labels_array([y for _, y in batch]))

    def __repr__(self) -> str:
        return f"PadCollate(pad_id={self.pad_id}, max_length={self.max_length}, truncation={self.truncation!r})"


def _is_token_id(x) -> bool:
    """True for a single integer (so ``[5, 6]`` is a sequence of two ids, not an item with a label)."""
    if isinstance(x, Tensor):
        return x.ndim == 0
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


# --------------------------------------------------------------------------- dataset


def _labels_to_ids(labels, classes, where: Callable[[int], str]) -> tuple[np.ndarray, list | None]:
    """Labels as int64 class ids; string labels map through ``classes`` (default: their sorted set)."""
    if isinstance(labels, Tensor):
        labels = np.asarray(labels)
    labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
    if any(isinstance(y, str) for y in labels):
        for k, y in enumerate(labels):
            if not isinstance(y, str):
                raise TypeError(f"{where(k)}: label {y!r} is not a string, but other labels are")
            if not y.strip():
                raise ValueError(f"{where(k)}: empty label")
        labels = [y.strip() for y in labels]
        classes = sorted(set(labels)) if classes is None else list(classes)
        index = {c: i for i, c in enumerate(classes)}
        out = np.empty(len(labels), dtype=np.int64)
        for k, y in enumerate(labels):
            if y not in index:
                raise ValueError(f"{where(k)}: label {y!r} is not one of the classes {classes}")
            out[k] = index[y]
        return out, classes
    for k, y in enumerate(labels):
        if isinstance(y, bool) or not isinstance(y, (int, np.integer)):
            raise TypeError(f"{where(k)}: label {y!r} is not an integer class id or a string")
    out = np.asarray(labels, dtype=np.int64).reshape(-1)
    if classes is not None:
        classes = list(classes)
        bad = np.flatnonzero((out < 0) | (out >= len(classes)))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{where(k)}: class id {out[k]} is out of range for {len(classes)} classes")
    elif out.size and out.min() < 0:
        k = int(np.argmin(out))
        raise ValueError(f"{where(k)}: class id {out[k]} is negative")
    return out, classes


class TextClassificationDataset(Dataset):
    """Texts with class labels, encoded once into token ids. Items are ``(ids, label)``.

    Args:
        texts: the texts (strings; an empty one is an error).
        labels: one per text: integer class ids, or strings (mapped to ids in
            sorted order, or in the order of ``classes``).
        vocab: a :class:`Vocabulary`, :class:`CharVocabulary` or
            :class:`HFTokenizerAdapter` (anything with ``encode`` and ``pad_id``). Default: a
            :class:`Vocabulary` built from ``texts`` with ``min_freq``, ``max_size`` and
            ``level``. Build the test set with the training set's ``vocab`` (and ``classes``).
        max_length: cut each sequence to this many ids (``<cls>`` included) when
            batching and indexing; the full encoding is kept in memory.
        add_cls: start every sequence with the ``<cls>`` token.
        classes: the class names, in id order (required to map string labels the
            same way in another split, e.g. ``classes=train.classes``).
        truncation: ``"right"`` keeps the start of long texts, ``"left"`` the end.

    Attributes:
        texts, labels (int64 array ``[N]``), classes (``None`` for integer labels
        given without ``classes``), vocab, lengths (int array of full sequence
        lengths).

    ``ds[i]`` is ``(ids, label)``: an int64 tensor ``[L]`` and an int. Batches:
    ``DataLoader(ds, batch_size=32)`` yields ``(ids, padding_mask, labels)``,
    padded per batch straight from the encoded ids (``get_batch``), exactly what
    ``collate_fn=ds.collate_fn`` (a :class:`PadCollate` with the vocabulary's
    ``pad_id`` and ``max_length``) builds from the items.
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels,
        vocab=None,
        *,
        max_length: int | None = None,
        add_cls: bool = False,
        classes: Sequence[str] | None = None,
        truncation: str = "right",
        min_freq: int = 1,
        max_size: int | None = None,
        level: str = "word",
        _where: Callable[[int], str] | None = None,
    ) -> None:
        where = _where or (lambda k: f"text {k}")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        texts = list(texts)
        labels = labels if isinstance(labels, (np.ndarray, Tensor)) else list(labels)
        if len(texts) != len(labels):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels")
        for k, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{where(k)}: expected a string, got {type(t).__name__}")
            if not t.strip():
                raise ValueError(f"{where(k)}: empty text")
        if truncation not in ("right", "left"):
            raise ValueError(f"truncation must be 'right' or 'left', got {truncation!r}")
        self.labels, self.classes = _labels_to_ids(labels, classes, where)
        if vocab is None:
            vocab = Vocabulary.build(texts, min_freq=min_freq, max_size=max_size, level=level)
        elif not (hasattr(vocab, "encode") and hasattr(vocab, "pad_id")):
            raise TypeError(f"vocab must be a Vocabulary or HFTokenizerAdapter, got {type(vocab).__name__}")
        self.texts = texts
        self.vocab = vocab
        self.max_length = _check_max_length(max_length)
        self.add_cls = bool(add_cls)
        self.truncation = truncation
        encode_batch = getattr(vocab, "encode_batch", None)
        encoded = encode_batch(texts, add_cls=add_cls) if encode_batch else [vocab.encode(t, add_cls) for t in texts]
        self.lengths = np.fromiter((len(e) for e in encoded), dtype=np.intp, count=len(encoded))
        self._starts = np.cumsum(self.lengths) - self.lengths
        self._flat = np.fromiter((i for e in encoded for i in e), dtype=np.int64, count=int(self.lengths.sum()))

    @classmethod
    def from_csv(
        cls,
        path,
        text_column: str,
        label_column: str,
        vocab=None,
        *,
        delimiter: str = ",",
        encoding: str = "utf-8-sig",
        **kwargs,
    ) -> TextClassificationDataset:
        """A dataset from a CSV file with a header row naming its columns.

        ``text_column`` and ``label_column`` name the columns to use (others are
        ignored). Labels that are all integers are class ids; otherwise they are
        class names (``.classes``). Errors name the file and the line: a missing
        column (listing the columns there are), an empty text or label, a row
        with the wrong number of fields. Quoted fields may span lines. Other
        keyword arguments go to the constructor (``max_length``, ``classes``, ...).
        """
        path = Path(os.fspath(path))
        if not path.is_file():
            raise FileNotFoundError(f"TextClassificationDataset.from_csv: no such file {path}")
        texts, labels, lines = [], [], []
        with open(path, newline="", encoding=encoding) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: the file is empty; expected a header row naming the columns")
            header = [h.strip() for h in header]
            columns = {}
            for j, name in enumerate(header):
                columns.setdefault(name, j)
            for role, name in (("text", text_column), ("label", label_column)):
                if name not in columns:
                    raise ValueError(
                        f"{path}: no {role} column {name!r}; the available columns are: {', '.join(map(repr, header))}"
                    )
            tj, lj = columns[text_column], columns[label_column]
            prev = reader.line_num
            for row in reader:
                line = prev + 1
                prev = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line
                if len(row) != len(header):
                    raise ValueError(
                        f"{path}, line {line}: {len(row)} fields, but the header has {len(header)} columns"
                    )
                text, label = row[tj], row[lj].strip()
                if not text.strip():
                    raise ValueError(f"{path}, line {line}: empty text in column {text_column!r}")
                if not label:
                    raise ValueError(f"{path}, line {line}: empty label in column {label_column!r}")
                texts.append(text)
                labels.append(label)
                lines.append(line)
        if not texts:
            raise ValueError(f"{path}: no data rows after the header")
        try:
            parsed = [int(y) for y in labels]
        except ValueError:
            parsed = labels
        where = lambda k: f"{path}, line {lines[k]}"  # noqa: E731
        ds = cls(texts, parsed, vocab, _where=where, **kwargs)
        ds.path = path
        return ds

    @property
    def targets(self) -> np.ndarray:
        return self.labels

    @property
    def class_to_idx(self) -> dict[str, int] | None:
        return None if self.classes is None else {c: i for i, c in enumerate(self.classes)}

    @property
    def pad_id(self) -> int:
        return int(self.vocab.pad_id)

    @property
    def collate_fn(self) -> PadCollate:
        """A :class:`PadCollate` with this dataset's ``pad_id``, ``max_length`` and ``truncation``."""
        return PadCollate(self.pad_id, self.max_length, self.truncation)

    def __len__(self) -> int:
        return len(self.labels)

    def _ids(self, i: int) -> np.ndarray:
        start, length = int(self._starts[i]), int(self.lengths[i])
        keep = length if self.max_length is None else min(length, self.max_length)
        if self.truncation == "left":
            start += length - keep
        return self._flat[start : start + keep]

    def __getitem__(self, index):
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for TextClassificationDataset of {n} texts")
        return from_numpy(self._ids(i).copy()), int(self.labels[i])

    def get_batch(self, indices):
        """``(ids, padding_mask, labels)`` for ``indices``, padded to the longest sequence (see the class docs)."""
        if _overrides_getitem(self, TextClassificationDataset):
            return NotImplemented
        idx = index_array(indices)
        _check_in_range(idx, len(self), "TextClassificationDataset")
        ids, mask = _pad_ragged(
            self._flat, self._starts[idx], self.lengths[idx], self.pad_id, self.max_length, self.truncation
        )
        return from_numpy(ids), from_numpy(mask), from_numpy(self.labels[idx].copy())

    def __getitems__(self, indices) -> list:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes is not None else "integer labels"
        return (
            f"TextClassificationDataset({len(self)} texts, {kind}, vocab={self.vocab!r}, max_length={self.max_length})"
        )
