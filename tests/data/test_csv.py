"""CSVDataset: parsing, targets (numeric and string labels), vectorised batches, error messages."""

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import DataLoader, default_collate
from forgeml.data.datasets import CSVDataset

IRIS = """sepal_length,sepal_width,species,petal_length
5.1,3.5,setosa,1.4
7.0,3.2,versicolor,4.7
6.3,3.3,virginica,6.0

4.9, 3.0 ,setosa,1.4
"""


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_string_labels_become_class_indices(tmp_path):
    ds = CSVDataset(write(tmp_path, IRIS), target="species")
    assert len(ds) == 4  # the blank line is skipped
    assert ds.feature_names == ["sepal_length", "sepal_width", "petal_length"] and ds.target_name == "species"
    assert ds.classes == ["setosa", "versicolor", "virginica"]
    assert ds.targets.dtype == np.int64 and ds.targets.tolist() == [0, 1, 2, 0]
    assert ds.class_to_idx == {"setosa": 0, "versicolor": 1, "virginica": 2}
    x, y = ds[3]
    assert x.dtype == fm.float32 and x.shape == (3,) and y.dtype == fm.int64 and y.shape == ()
    np.testing.assert_array_equal(x.numpy(), np.array([4.9, 3.0, 1.4], np.float32))
    assert ds.data.shape == (4, 3) and ds.data.dtype == np.float32


def test_feature_selection_order_and_dtype(tmp_path):
    ds = CSVDataset(
        write(tmp_path, IRIS), target="species", features=["petal_length", "sepal_length"], dtype=fm.float64
    )
    np.testing.assert_array_equal(ds.data[1], [4.7, 7.0])
    assert ds[0][0].dtype == fm.float64
    assert CSVDataset(write(tmp_path, IRIS), target=2).target_name == "species"


def test_numeric_targets(tmp_path):
    ints = CSVDataset(write(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5,6,1\n"), target="y")
    assert ints.targets.dtype == np.int64 and ints.targets.tolist() == [0, 1, 1] and ints.classes is None
    floats = CSVDataset(write(tmp_path, "a,y\n1,0.5\n3,-2e1\n"), target="y")
    assert floats.targets.dtype == np.float32 and floats.targets.tolist() == [0.5, -20.0]
    forced = CSVDataset(write(tmp_path, "a,y\n1,3\n3,4\n"), target="y", target_dtype=fm.float32)
    assert forced.targets.dtype == np.float32
    assert forced[1][1].item() == 4.0


def test_vectorised_batches_equal_per_item(tmp_path):
    rng = np.random.default_rng(0)
    rows = "\n".join(
        f"{a:.4f},{b:.4f},{'cat' if c else 'dog'}" for a, b, c in zip(*rng.random((2, 30)), rng.integers(0, 2, 30))
    )
    ds = CSVDataset(write(tmp_path, "a,b,label\n" + rows + "\n"), target="label")
    idx = [29, 0, 7, 7, -1]
    for fast, slow in zip(ds.get_batch(idx), default_collate([ds[i] for i in idx])):
        assert fast.dtype == slow.dtype and fast.shape == slow.shape
        np.testing.assert_array_equal(fast.numpy(), slow.numpy())
    batches = list(DataLoader(ds, batch_size=8, shuffle=True))
    assert [len(b[1]) for b in batches] == [8, 8, 8, 6]
    assert sorted(np.concatenate([b[0].numpy()[:, 0] for b in batches]).tolist()) == sorted(ds.data[:, 0].tolist())


def test_quoted_fields_and_semicolons(tmp_path):
    ds = CSVDataset(write(tmp_path, 'x;"the label"\n1.5;"a;b"\n2;c\n'), target="the label", delimiter=";")
    assert ds.classes == ["a;b", "c"] and ds.data[:, 0].tolist() == [1.5, 2.0]


def test_missing_column_lists_the_available_ones(tmp_path):
    path = write(tmp_path, IRIS)
    with pytest.raises(
        ValueError,
        match=r"no target column 'label'; the available columns are: 'sepal_length', 'sepal_width', 'species', 'petal_length'",
    ):
        CSVDataset(path, target="label")
    with pytest.raises(ValueError, match=r"no feature column 'petal_width'; the available columns are: 'sepal_length'"):
        CSVDataset(path, target="species", features=["sepal_length", "petal_width"])
    with pytest.raises(ValueError, match="target column position 9 is out of range"):
        CSVDataset(path, target=9)
    with pytest.raises(ValueError, match="target column 'species' is also listed among the features"):
        CSVDataset(path, target="species", features=["species"])


def test_unparsable_value_names_line_and_column(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,0\n3,x4,1\n5,6,1\n")
    with pytest.raises(ValueError, match=r"data.csv, line 3, column 'b': 'x4', which is not a number"):
        CSVDataset(path, target="y")
    path = write(tmp_path, "a,b,y\n1,2,0\n\n3,4,1\n5,,1\n")
    with pytest.raises(ValueError, match=r"line 5, column 'b': an empty value"):
        CSVDataset(path, target="y")
    path = write(tmp_path, "a,y\n1,0\n2,1.5\n")
    with pytest.raises(ValueError, match=r"line 3, column 'y': '1.5' is not an integer"):
        CSVDataset(path, target="y", target_dtype=fm.int64)
    path = write(tmp_path, "a,y\n1,cat\n2,\n")
    with pytest.raises(ValueError, match=r"line 3, column 'y': an empty target value"):
        CSVDataset(path, target="y")


def test_file_shape_errors(tmp_path):
    with pytest.raises(ValueError, match=r"line 3: 2 values, but the header has 3 columns"):
        CSVDataset(write(tmp_path, "a,b,y\n1,2,0\n3,4\n"), target="y")
    with pytest.raises(ValueError, match="the file is empty"):
        CSVDataset(write(tmp_path, ""), target="y")
    with pytest.raises(ValueError, match="names column 'a' twice"):
        CSVDataset(write(tmp_path, "a,a,y\n1,2,3\n"), target="y")
    with pytest.raises(FileNotFoundError, match="no such file"):
        CSVDataset(tmp_path / "missing.csv", target="y")
    with pytest.raises(TypeError, match="floating dtype"):
        CSVDataset(write(tmp_path, "a,y\n1,2\n"), target="y", dtype=fm.int64)
    with pytest.raises(IndexError, match="out of range for CSVDataset of 1 rows"):
        CSVDataset(write(tmp_path, "a,y\n1,2\n"), target="y")[1]
