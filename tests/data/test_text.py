"""Text data: tokenize, Vocabulary / CharVocabulary, HFTokenizerAdapter, PadCollate, TextClassificationDataset."""

import json
import sys

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import (
    CharVocabulary,
    DataLoader,
    HFTokenizerAdapter,
    PadCollate,
    TextClassificationDataset,
    Vocabulary,
    tokenize,
)
from forgeml.data.text import pad_sequences

CORPUS = [
    "The cat sat on the mat.",
    "The dog sat on the log!",
    "A cat and a dog: 2 friends, 2 pets.",
]


# --------------------------------------------------------------------------- tokenize


def test_tokenize_lowercases_splits_on_non_alphanumerics_and_keeps_numbers():
    assert tokenize("Don't pay $1,000 for an MP3-player!") == [
        "don",
        "t",
        "pay",
        "1",
        "000",
        "for",
        "an",
        "mp3",
        "player",
    ]
    assert tokenize("snake_case\tand\nnew-lines") == ["snake", "case", "and", "new", "lines"]
    assert tokenize("Café 日本語 ÜBER") == ["café", "日本語", "über"]
    assert tokenize("KEEP Case", lower=False) == ["KEEP", "Case"]
    assert tokenize("  ...  ") == []
    with pytest.raises(TypeError, match="str"):
        tokenize(b"bytes")


# --------------------------------------------------------------------------- Vocabulary


def test_build_puts_specials_first_then_frequency_then_lexicographic_order():
    vocab = Vocabulary.build(CORPUS)
    itos = vocab.get_itos()
    assert itos[:3] == ["<pad>", "<unk>", "<cls>"]
    assert (vocab.pad_id, vocab.unk_id, vocab.cls_id) == (0, 1, 2)
    # the: 4; a: 2, cat: 2, dog: 2, on: 2, sat: 2, 2: 2 (ties in code-point order: digits before letters)
    assert itos[3:10] == ["the", "2", "a", "cat", "dog", "on", "sat"]
    assert itos[10:] == ["and", "friends", "log", "mat", "pets"]
    assert len(vocab) == vocab.vocab_size == 15
    assert vocab.counts["the"] == 4 and vocab.counts["pets"] == 1
    # the same corpus in another order gives the same ids
    assert Vocabulary.build(reversed(CORPUS)) == vocab


def test_build_min_freq_and_max_size():
    vocab = Vocabulary.build(CORPUS, min_freq=2)
    assert vocab.get_itos() == ["<pad>", "<unk>", "<cls>", "the", "2", "a", "cat", "dog", "on", "sat"]
    small = Vocabulary.build(CORPUS, max_size=5)  # max_size counts the three specials
    assert small.get_itos() == ["<pad>", "<unk>", "<cls>", "the", "2"]
    assert Vocabulary.build(CORPUS, max_size=3).get_itos() == ["<pad>", "<unk>", "<cls>"]
    with pytest.raises(ValueError, match="max_size counts the 3 special tokens"):
        Vocabulary.build(CORPUS, max_size=2)
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build(CORPUS, min_freq=0)
    with pytest.raises(TypeError, match="not a single string"):
        Vocabulary.build("the cat")
    with pytest.raises(TypeError, match="corpus item 1"):
        Vocabulary.build(["ok", 3])


def test_encode_maps_unknown_words_to_unk_and_handles_cls_and_max_length():
    vocab = Vocabulary.build(CORPUS, min_freq=2)
    the, cat, sat = vocab["the"], vocab["cat"], vocab["sat"]
    assert vocab.encode("THE cat sat on a zebra") == [the, cat, sat, vocab["on"], vocab["a"], vocab.unk_id]
    assert vocab.encode("the cat", add_cls=True) == [vocab.cls_id, the, cat]
    assert vocab.encode("the cat sat", add_cls=True, max_length=2) == [vocab.cls_id, the]
    assert vocab.encode("") == []
    assert vocab["zebra"] == vocab.unk_id and vocab.token_to_id("zebra") is None
    assert vocab.token_to_id("cat") == cat and vocab.id_to_token(cat) == "cat"
    assert "cat" in vocab and "zebra" not in vocab
    with pytest.raises(IndexError, match="out of range"):
        vocab.id_to_token(len(vocab))
    with pytest.raises(ValueError, match="max_length"):
        vocab.encode("the", max_length=0)
    with pytest.raises(TypeError, match="str"):
        vocab.encode(["the"])


def test_word_round_trip_and_decode_of_specials():
    vocab = Vocabulary.build(CORPUS)
    text = "the dog sat on the mat and 2 pets"
    ids = vocab.encode(text, add_cls=True)
    assert vocab.decode(ids) == text
    padded = [*ids, 0, 0]
    assert vocab.decode(padded) == text
    assert vocab.decode(padded, skip_special=False) == "<cls> " + text + " <pad> <pad>"
    assert vocab.decode(vocab.encode("the zebra"), skip_special=False) == "the <unk>"
    # tensors and arrays decode too
    assert vocab.decode(fm.tensor(ids)) == text and vocab.decode(np.asarray(ids, dtype=np.int32)) == text
    with pytest.raises(IndexError, match="token id 99"):
        vocab.decode([3, 99])
    with pytest.raises(TypeError, match="integers"):
        vocab.decode([1.5])


def test_char_vocabulary_round_trip_keeps_case_and_punctuation():
    vocab = CharVocabulary.build(CORPUS)
    assert vocab.level == "char" and not vocab.lower
    text = "The dog sat, a cat: 2!"
    ids = vocab.encode(text)
    assert len(ids) == len(text) and vocab.unk_id not in ids
    assert vocab.decode(ids) == text
    assert vocab.encode("Z") == [vocab.unk_id]  # no capital Z in the corpus
    # most frequent character first: the space
    assert vocab.get_itos()[3] == " "
    # the same through Vocabulary(level="char"), and lower=True folds case
    assert Vocabulary.build(CORPUS, level="char") == vocab
    folded = CharVocabulary.build(CORPUS, lower=True)
    assert folded.decode(folded.encode("THE")) == "the"
    with pytest.raises(ValueError, match="character-level"):
        CharVocabulary(level="word")


def test_extra_specials_and_invalid_tokens():
    vocab = Vocabulary.build(["a b sep"], extra_specials=("<sep>", "<mask>"))
    assert vocab.get_itos()[:5] == ["<pad>", "<unk>", "<cls>", "<sep>", "<mask>"]
    assert vocab.decode([3, 5]) == vocab.decode([5])  # extra specials are skipped when decoding
    with pytest.raises(ValueError, match="special token"):
        Vocabulary(["<pad>"])
    with pytest.raises(ValueError, match="listed twice"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="level"):
        Vocabulary(level="byte")


@pytest.mark.parametrize("cls, level", [(Vocabulary, "word"), (CharVocabulary, "char")])
def test_save_load_round_trip(tmp_path, cls, level):
    vocab = cls.build([*CORPUS, "Ünïcödé ✓ text"], min_freq=1)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "forgeml.vocabulary" and data["level"] == level
    loaded = Vocabulary.load(path)  # the base class loads either level
    assert type(loaded) is cls and loaded == vocab
    text = "The Ünïcödé cat ✓ sat on a zebra"
    assert loaded.encode(text, add_cls=True) == vocab.encode(text, add_cls=True)
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab


def test_load_errors_and_custom_tokenizer(tmp_path):
    def by_space(text):
        return text.split(" ")

    vocab = Vocabulary.build(["a-b c", "a-b d"], tokenizer=by_space)
    assert vocab.get_itos()[3] == "a-b"
    path = tmp_path / "vocab.json"
    vocab.save(path)
    with pytest.raises(ValueError, match=r"custom tokenizer .*by_space"):
        Vocabulary.load(path)
    assert Vocabulary.load(path, tokenizer=by_space).encode("a-b c") == vocab.encode("a-b c")
    with pytest.raises(ValueError, match="not a ForgeML vocabulary"):
        Vocabulary.from_dict({"tokens": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON vocabulary"):
        Vocabulary.load(bad)
    word = tmp_path / "word.json"
    Vocabulary.build(CORPUS).save(word)
    with pytest.raises(ValueError, match="word'-level vocabulary"):
        CharVocabulary.load(word)


# --------------------------------------------------------------------------- PadCollate


def test_pad_collate_shapes_dtypes_and_mask():
    batch = [([5, 6, 7], 1), ([8], 0), ([9, 10], 1)]
    ids, mask, labels = PadCollate()(batch)
    assert ids.shape == (3, 3) and mask.shape == (3, 3) and labels.shape == (3,)
    assert (ids.dtype, mask.dtype, labels.dtype) == (fm.int64, fm.bool, fm.int64)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[False, False, False], [False, True, True], [False, False, True]]
    assert labels.tolist() == [1, 0, 1]


def test_pad_collate_pad_id_inputs_and_bare_sequences():
    collate = PadCollate(pad_id=99)
    items = [(fm.tensor([1, 2]), fm.tensor(3)), (np.array([4], dtype=np.int32), np.int64(0))]
    ids, mask, labels = collate(items)
    assert ids.tolist() == [[1, 2], [4, 99]] and ids.dtype == fm.int64
    assert mask.tolist() == [[False, False], [False, True]]
    assert labels.tolist() == [3, 0] and labels.dtype == fm.int64
    # items without labels
    ids, mask = collate([[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 99, 99]]
    # an empty sequence is all padding
    ids, mask, _ = PadCollate()([([], 0), ([7], 1)])
    assert ids.tolist() == [[0], [7]] and mask.tolist() == [[True], [False]]


def test_pad_collate_truncation():
    batch = [([1, 2, 3, 4, 5], 0), ([6, 7], 1)]
    ids, mask, _ = PadCollate(max_length=3)(batch)
    assert ids.tolist() == [[1, 2, 3], [6, 7, 0]] and mask.tolist() == [[False] * 3, [False, False, True]]
    ids, mask, _ = PadCollate(max_length=3, truncation="left")(batch)
    assert ids.tolist() == [[3, 4, 5], [6, 7, 0]]
    # max_length caps T; a batch of shorter sequences stays as long as its longest
    ids, _, _ = PadCollate(max_length=10)(batch)
    assert ids.shape == (2, 5)
    with pytest.raises(ValueError, match="truncation"):
        PadCollate(truncation="middle")
    with pytest.raises(ValueError, match="max_length"):
        PadCollate(max_length=0)
    with pytest.raises(TypeError, match="integer token ids"):
        PadCollate()([([1.5, 2.0], 0)])
    with pytest.raises(ValueError, match="non-empty list"):
        PadCollate()([])


def test_pad_collate_matches_torch_pad_sequence():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 50, size=n) for n in (7, 1, 4, 7, 3)]
    ids, mask = pad_sequences(seqs, pad_id=0)
    expected = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(s) for s in seqs], batch_first=True, padding_value=0)
    np.testing.assert_array_equal(np.asarray(ids), expected.numpy())
    lengths = torch.tensor([len(s) for s in seqs])
    np.testing.assert_array_equal(np.asarray(mask), (torch.arange(7)[None, :] >= lengths[:, None]).numpy())


# --------------------------------------------------------------------------- TextClassificationDataset

TEXTS = ["good great film", "bad awful film", "great fun", "awful", "good", "so bad"]
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg"]


def test_dataset_builds_its_vocabulary_and_maps_string_labels():
    ds = TextClassificationDataset(TEXTS, LABELS)
    assert ds.classes == ["neg", "pos"] and ds.class_to_idx == {"neg": 0, "pos": 1}
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert ds.vocab == Vocabulary.build(TEXTS)
    ids, label = ds[1]
    assert isinstance(ids, fm.Tensor) and ids.dtype == fm.int64 and label == 0
    assert ds.vocab.decode(ids) == "bad awful film"
    assert len(ds) == 6 and ds.lengths.tolist() == [3, 3, 2, 1, 1, 2]
    with pytest.raises(IndexError, match="out of range"):
        ds[6]
    # another split uses the first one's vocabulary and classes
    test = TextClassificationDataset(["great zebra"], ["pos"], vocab=ds.vocab, classes=ds.classes)
    assert test.labels.tolist() == [1] and test[0][0].tolist() == [ds.vocab["great"], ds.vocab.unk_id]
    with pytest.raises(ValueError, match="'meh' is not one of the classes"):
        TextClassificationDataset(["x"], ["meh"], vocab=ds.vocab, classes=ds.classes)


def test_dataset_with_integer_labels_cls_and_max_length():
    ds = TextClassificationDataset(TEXTS, [1, 0, 1, 0, 1, 0], add_cls=True, max_length=3, truncation="left")
    assert ds.classes is None
    ids, label = ds[0]  # <cls> good great film -> last three ids
    assert ids.tolist() == ds.vocab.encode("good great film")[-3:] and label == 1
    with pytest.raises(ValueError, match="text 2: empty text"):
        TextClassificationDataset(["a", "b", "  "], [0, 1, 0])
    with pytest.raises(ValueError, match="2 texts but 3 labels"):
        TextClassificationDataset(["a", "b"], [0, 1, 0])
    with pytest.raises(TypeError, match="not an integer class id"):
        TextClassificationDataset(["a"], [0.5])


@pytest.mark.parametrize("max_length, truncation", [(None, "right"), (2, "right"), (2, "left")])
def test_dataset_batches_vectorised_equal_padcollate_batches(max_length, truncation):
    ds = TextClassificationDataset(TEXTS * 3, LABELS * 3, add_cls=True, max_length=max_length, truncation=truncation)
    fm.manual_seed(3)
    fast = list(DataLoader(ds, batch_size=4, shuffle=True))
    fm.manual_seed(3)
    slow = list(DataLoader(ds, batch_size=4, shuffle=True, collate_fn=PadCollate(0, max_length, truncation)))
    assert len(fast) == len(slow) == 5
    for a, b in zip(fast, slow):
        assert len(a) == len(b) == 3
        for x, y in zip(a, b):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    ids, mask, _ = fast[0]
    assert ids.shape[1] == (max_length or 4) and (ids.numpy() == 0).tolist() == mask.tolist()
    # ds.collate_fn is the matching PadCollate
    assert repr(ds.collate_fn) == repr(PadCollate(0, max_length, truncation))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_from_csv_good_file(tmp_path):
    path = write(
        tmp_path / "reviews.csv",
        "\ufeffid,review,sentiment,extra\n"
        '1,"Loved it, truly",pos,x\n'
        '2,"Hated it.\nA second line.",neg,y\n'
        "\n"
        "3,Fine film,pos,z\n",
    )
    ds = TextClassificationDataset.from_csv(path, "review", "sentiment")
    assert ds.texts == ["Loved it, truly", "Hated it.\nA second line.", "Fine film"]
    assert ds.classes == ["neg", "pos"] and ds.labels.tolist() == [1, 0, 1]
    assert ds.vocab.decode(ds[1][0]) == "hated it a second line"
    # integer labels, and a vocabulary passed in
    ints = write(tmp_path / "ints.csv", "text,label\nhated it,0\nloved it,1\n")
    ds2 = TextClassificationDataset.from_csv(ints, "text", "label", vocab=ds.vocab, max_length=1)
    assert ds2.classes is None and ds2.labels.tolist() == [0, 1] and ds2.vocab is ds.vocab
    assert ds2[0][0].tolist() == [ds.vocab["hated"]]
    ids, _, labels = next(iter(DataLoader(ds, batch_size=3)))
    assert ids.shape == (3, 5) and labels.tolist() == [1, 0, 1]


def test_from_csv_missing_column_lists_the_available_ones(tmp_path):
    path = write(tmp_path / "d.csv", "body,label\nhello,1\n")
    with pytest.raises(ValueError, match=r"no text column 'text'; the available columns are: 'body', 'label'"):
        TextClassificationDataset.from_csv(path, "text", "label")
    with pytest.raises(ValueError, match=r"no label column 'y'; the available columns are: 'body', 'label'"):
        TextClassificationDataset.from_csv(path, "body", "y")


def test_from_csv_empty_rows_name_their_line(tmp_path):
    # lines 3-4 hold one quoted two-line text, line 5 is blank, the empty text is on line 6
    path = write(tmp_path / "d.csv", 'text,label\nfine,a\n"two\nlines",b\n\n   ,a\n')
    with pytest.raises(ValueError, match=r"d\.csv, line 6: empty text in column 'text'"):
        TextClassificationDataset.from_csv(path, "text", "label")
    path = write(tmp_path / "e.csv", "text,label\nfine,a\nstill fine,\n")
    with pytest.raises(ValueError, match=r"e\.csv, line 3: empty label in column 'label'"):
        TextClassificationDataset.from_csv(path, "text", "label")
    path = write(tmp_path / "f.csv", "text,label\nfine,a,extra\n")
    with pytest.raises(ValueError, match=r"f\.csv, line 2: 3 fields, but the header has 2 columns"):
        TextClassificationDataset.from_csv(path, "text", "label")
    path = write(tmp_path / "g.csv", "text,label\nfine,a\nok,zzz\n")
    with pytest.raises(ValueError, match=r"g\.csv, line 3: label 'zzz' is not one of the classes"):
        TextClassificationDataset.from_csv(path, "text", "label", classes=["a", "b"])
    with pytest.raises(FileNotFoundError):
        TextClassificationDataset.from_csv(tmp_path / "missing.csv", "text", "label")
    with pytest.raises(ValueError, match="no data rows"):
        TextClassificationDataset.from_csv(write(tmp_path / "h.csv", "text,label\n"), "text", "label")


# --------------------------------------------------------------------------- Hugging Face tokenizers


@pytest.fixture(scope="module")
def hf_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(
        vocab_size=80, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    return tok


def test_hf_adapter_encode_decode_and_special_ids(hf_tokenizer):
    adapter = HFTokenizerAdapter(hf_tokenizer)
    assert (adapter.pad_id, adapter.unk_id, adapter.cls_id) == (0, 1, 2)
    assert adapter.pad_token == "[PAD]" and len(adapter) == hf_tokenizer.get_vocab_size()
    text = "The cat sat on the mat"
    plain = hf_tokenizer.encode(text, add_special_tokens=False).ids
    assert adapter.encode(text) == plain
    assert adapter.encode(text, add_cls=True, max_length=3) == [2, *plain[:2]]
    assert adapter.decode(adapter.encode(text, add_cls=True)) == "the cat sat on the mat"
    assert adapter.decode([2, *plain], skip_special=False).startswith("[CLS]")
    assert adapter.encode_batch([text, "dog"], add_cls=True) == [adapter.encode(t, add_cls=True) for t in [text, "dog"]]
    assert adapter.token_to_id("[CLS]") == 2 and adapter.id_to_token(0) == "[PAD]"
    with pytest.raises(IndexError, match="out of range"):
        adapter.decode([len(adapter)])


def test_hf_adapter_ignores_the_tokenizers_own_padding_and_saves(hf_tokenizer, tmp_path):
    from tokenizers import Tokenizer

    padded = Tokenizer.from_str(hf_tokenizer.to_str())
    padded.enable_padding(pad_id=3, pad_token="[SEP]", length=16)  # padding configured: its token becomes pad
    adapter = HFTokenizerAdapter(padded)
    assert adapter.pad_id == 3 and len(adapter.encode("the cat")) == 2
    assert padded.encode("the cat").ids[-1] == 3  # the caller's tokenizer is left as it was
    path = tmp_path / "tokenizer.json"
    adapter.save(path)
    again = HFTokenizerAdapter.load(path, pad_token="[PAD]")
    assert again.pad_id == 0 and again.encode("the dog sat") == adapter.encode("the dog sat")
    assert HFTokenizerAdapter(str(path), pad_token="[PAD]").encode("a cat") == again.encode("a cat")


def test_hf_adapter_in_a_dataset_with_padcollate(hf_tokenizer):
    adapter = HFTokenizerAdapter(hf_tokenizer)
    ds = TextClassificationDataset(CORPUS, [0, 1, 0], vocab=adapter, add_cls=True)
    ids, mask, labels = next(iter(DataLoader(ds, batch_size=3)))
    assert ids[:, 0].tolist() == [2, 2, 2] and labels.tolist() == [0, 1, 0]
    assert (ids.numpy() == adapter.pad_id).sum() == mask.numpy().sum()
    row = ids[1].numpy()[~mask[1].numpy()]
    assert adapter.decode(row) == "the dog sat on the log !"


def test_hf_adapter_errors(hf_tokenizer, monkeypatch):
    from tokenizers import Tokenizer, models

    bare = Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    with pytest.raises(ValueError, match=r"none of the pad tokens .*pass pad_token="):
        HFTokenizerAdapter(bare)
    assert HFTokenizerAdapter(bare, pad_token="b").cls_id is None
    with pytest.raises(ValueError, match="no classification token"):
        HFTokenizerAdapter(bare, pad_token="b").encode("a", add_cls=True)
    with pytest.raises(ValueError, match="'<nope>' is not in the tokenizer's vocabulary"):
        HFTokenizerAdapter(hf_tokenizer, pad_token="<nope>")
    with pytest.raises(TypeError, match=r"expects a tokenizers\.Tokenizer"):
        HFTokenizerAdapter(object())
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if the package were not installed
    with pytest.raises(ImportError, match="pip install tokenizers"):
        HFTokenizerAdapter(hf_tokenizer)
