"""NIH ChestX-ray14 loading, patient splits and balanced subsets.

The metadata is an excerpt of the real file (tests/data/nih); the images are tiny
PNGs generated with the real file names in a temporary folder.
"""

import csv
import gzip
import math
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from skclipxray.datasets import (
    NO_FINDING,
    MissingImagesWarning,
    balanced_subset,
    load_nih_chestxray14,
    train_test_split_by_patient,
)
from skclipxray.labels import NIH_PATHOLOGIES

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


@pytest.fixture(scope="module")
def metadata_file(data_dir):
    return data_dir / "nih" / "Data_Entry_2017_v2020.csv"


@pytest.fixture(scope="module")
def rows(metadata_file):
    """The excerpt read with the csv module: the reference for the loader."""
    with open(metadata_file, newline="") as file:
        return list(csv.DictReader(file))


def _write_png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(path)


def _make_download(root, names, layout):
    """Write PNGs for ``names`` as the official archives lay them out."""
    for i, name in enumerate(names):
        if layout == "images":
            _write_png(root / "images" / name)
        else:  # images_001/images ... images_003/images
            _write_png(root / f"images_{i % 3 + 1:03d}" / "images" / name)


def _on_disk(rows):
    """Two rows in three have their image downloaded."""
    return [r["Image Index"] for i, r in enumerate(rows) if i % 3 != 0]


def _write_metadata(path, lines):
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


@pytest.mark.parametrize("layout", ["images", "archives"])
def test_load_keeps_images_on_disk_and_counts_dropped_rows(tmp_path, metadata_file, rows, layout):
    present = _on_disk(rows)
    _make_download(tmp_path, present, layout)
    n_missing = len(rows) - len(present)

    with pytest.warns(MissingImagesWarning, match=f"{n_missing} of {len(rows)} rows"):
        data = load_nih_chestxray14(tmp_path, metadata=metadata_file)

    assert len(data) == len(present) == len(data.paths) == len(data.groups)
    assert data.n_metadata_rows == len(rows)
    assert data.n_dropped_missing == n_missing
    assert data.n_dropped_filters == 0
    assert data.paths.index.tolist() == present  # file order kept
    for name, path in data.paths.items():
        assert path.endswith(name)
        assert Image.open(path).size == (8, 8)
    if layout == "archives":
        assert {p.split("/")[-3] for p in data.paths} == {"images_001", "images_002", "images_003"}
    assert f"{n_missing} rows whose image is not on disk" in data.summary


def test_label_matrix_matches_exact_split_of_finding_labels(tmp_path, metadata_file, rows):
    data = load_nih_chestxray14(metadata=metadata_file, require_images=False)

    expected = np.array(
        [[label in r["Finding Labels"].split("|") for label in NIH_PATHOLOGIES] for r in rows],
        dtype=np.uint8,
    )
    assert list(data.Y.columns) == list(NIH_PATHOLOGIES)
    assert (data.Y.dtypes == np.uint8).all()
    np.testing.assert_array_equal(data.Y.to_numpy(), expected)
    no_finding = np.array([r["Finding Labels"] == NO_FINDING for r in rows])
    assert no_finding.any() and not data.Y.to_numpy()[no_finding].any()
    assert (expected.sum(axis=0) > 0).all(), "the excerpt covers all 14 labels"
    assert (expected.sum(axis=1) > 1).any(), "and co-occurring labels"


def test_metadata_groups_and_tidy_columns(metadata_file, rows):
    data = load_nih_chestxray14(metadata=metadata_file, require_images=False)

    assert all(path is None for path in data.paths)
    assert data.groups.tolist() == [int(r["Patient ID"]) for r in rows]
    meta = data.metadata
    assert meta.index.tolist() == [r["Image Index"] for r in rows]
    assert meta["age"].tolist() == [int(r["Patient Age"]) for r in rows]
    assert meta["sex"].tolist() == [r["Patient Gender"] for r in rows]
    assert meta["view_position"].tolist() == [r["View Position"] for r in rows]
    assert meta["follow_up"].tolist() == [int(r["Follow-up #"]) for r in rows]
    assert meta["original_width"].tolist() == [int(r["OriginalImage[Width"]) for r in rows]
    assert set(meta["view_position"]) == {"PA", "AP"}
    assert data.groups.value_counts().max() > 1


def test_gzipped_metadata_is_found_in_the_image_root(tmp_path, metadata_file, rows):
    gzipped = tmp_path / "Data_Entry_2017_v2020.csv.gz"
    with open(metadata_file, "rb") as src, gzip.open(gzipped, "wb") as dst:
        shutil.copyfileobj(src, dst)
    _make_download(tmp_path, [r["Image Index"] for r in rows], "images")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped, nothing to warn about
        data = load_nih_chestxray14(tmp_path)

    plain = load_nih_chestxray14(metadata=metadata_file, require_images=False)
    assert data.metadata_path.endswith(".csv.gz")
    assert data.n_dropped_missing == 0
    pd.testing.assert_frame_equal(data.Y, plain.Y)


def test_missing_metadata_and_images_are_reported(tmp_path, metadata_file):
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017.csv"):
        load_nih_chestxray14(tmp_path)
    with pytest.raises(FileNotFoundError, match="None of the 239 images"):
        load_nih_chestxray14(tmp_path, metadata=metadata_file)
    with pytest.raises(ValueError, match="image_root is required"):
        load_nih_chestxray14(metadata=metadata_file)


GOOD = "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143"


@pytest.mark.parametrize(
    "lines, match",
    [
        ([GOOD, "00000001_001.png,Cardiomegaly|Pneumonitis,1,1,58,M,PA,1,1,0.1,0.1"],
         r"line 3 \(image '00000001_001.png'\): unknown label 'Pneumonitis'"),
        # A substring of a real label is not that label.
        ([GOOD, "00000002_000.png,Massive,0,2,80,M,PA,1,1,0.1,0.1"],
         r"line 3 .*unknown label 'Massive'"),
        ([GOOD, "00000002_000.png,Mass||Nodule,0,2,80,M,PA,1,1,0.1,0.1"],
         r"line 3 .*unknown label ''"),
        ([GOOD, "00000002_000.png,No Finding|Mass,0,2,80,M,PA,1,1,0.1,0.1"],
         r"line 3 .*'No Finding' together with a pathology"),
        ([GOOD, "00000002_000.png,Mass,0,2,80,M,PA,1,1,0.1,0.1,extra"],
         r"Malformed metadata file .*line 3"),
        ([GOOD, "00000002_000.png,Mass,0,2"],
         r"line 3 \(image '00000002_000.png'\): 'age' is empty"),
        ([GOOD, "00000002_000.png,Mass,0,2,eighty,M,PA,1,1,0.1,0.1"],
         r"line 3 .*'age' is 'eighty', not a whole number"),
        ([GOOD, GOOD], r"line 3 \(image '00000001_000.png'\): this image is listed twice"),
    ],
)
def test_bad_metadata_names_the_row(tmp_path, lines, match):
    path = _write_metadata(tmp_path / "Data_Entry_2017.csv", lines)
    with pytest.raises(ValueError, match=match):
        load_nih_chestxray14(metadata=path, require_images=False)


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age\nx.png,Mass,0,1,3\n"
    )
    missing = r"\['View Position', 'Patient Gender or Patient Sex'\]"
    with pytest.raises(ValueError, match=r"lacks the column\(s\) " + missing):
        load_nih_chestxray14(metadata=path, require_images=False)


def test_older_age_format_and_sex_column_name(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position\n"
        "00000001_000.png,Hernia,0,1,058Y,F,AP\n"
    )
    data = load_nih_chestxray14(metadata=path, require_images=False)
    assert data.metadata["age"].tolist() == [58]
    assert data.metadata["sex"].tolist() == ["F"]
    assert data.Y["Hernia"].tolist() == [1]


def test_views_filter(tmp_path, metadata_file, rows):
    present = _on_disk(rows)
    _make_download(tmp_path, present, "images")
    view = {r["Image Index"]: r["View Position"] for r in rows}

    with pytest.warns(MissingImagesWarning):
        pa = load_nih_chestxray14(tmp_path, metadata=metadata_file, views="PA")
    assert pa.paths.index.tolist() == [n for n in present if view[n] == "PA"]
    n_pa = sum(v == "PA" for v in view.values())
    # Missing images are counted among the PA rows only; the AP rows are filtered.
    assert pa.n_dropped_missing == n_pa - len(pa)
    assert pa.n_dropped_filters == len(rows) - n_pa

    with pytest.warns(MissingImagesWarning):
        both = load_nih_chestxray14(tmp_path, metadata=metadata_file, views=("PA", "AP"))
    assert both.paths.index.tolist() == present
    with pytest.raises(ValueError, match=r"views='LL': \['LL'\] not among .*\['AP', 'PA'\]"):
        load_nih_chestxray14(tmp_path, metadata=metadata_file, views="LL")


def test_follow_up_first_keeps_the_first_image_on_disk_per_patient(tmp_path, metadata_file, rows):
    present = _on_disk(rows)
    _make_download(tmp_path, present, "images")

    with pytest.warns(MissingImagesWarning):
        data = load_nih_chestxray14(tmp_path, metadata=metadata_file, follow_up="first")

    table = pd.DataFrame(rows).astype({"Follow-up #": int, "Patient ID": int})
    table = table[table["Image Index"].isin(present)]
    expected = table.loc[table.groupby("Patient ID")["Follow-up #"].idxmin(), "Image Index"]
    assert sorted(data.paths.index) == sorted(expected)
    assert data.groups.is_unique
    with pytest.raises(ValueError, match="follow_up must be 'all' or 'first'"):
        load_nih_chestxray14(tmp_path, metadata=metadata_file, follow_up="last")


def test_official_split_lists(tmp_path, metadata_file, rows):
    names = [r["Image Index"] for r in rows]
    _make_download(tmp_path, names, "images")
    with pytest.raises(FileNotFoundError, match="test_list.txt"):
        load_nih_chestxray14(tmp_path, metadata=metadata_file, split="test")
    test_names = names[::4]
    (tmp_path / "test_list.txt").write_text("\n".join(test_names) + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(n for n in names if n not in test_names))

    test = load_nih_chestxray14(tmp_path, metadata=metadata_file, split="test")
    train = load_nih_chestxray14(tmp_path, metadata=metadata_file, split="train_val")
    assert test.paths.index.tolist() == test_names
    assert len(train) + len(test) == len(rows)
    assert test.n_dropped_filters == len(rows) - len(test_names)
    with pytest.raises(ValueError, match="split must be"):
        load_nih_chestxray14(tmp_path, metadata=metadata_file, split="val")


def test_train_test_split_by_patient_has_no_patient_on_both_sides(metadata_file):
    data = load_nih_chestxray14(metadata=metadata_file, require_images=False)

    parts = train_test_split_by_patient(
        data.paths, data.Y, data.groups, groups=data.groups, test_size=0.25, random_state=0
    )
    paths_train, paths_test, Y_train, Y_test, g_train, g_test = parts

    assert not set(g_train) & set(g_test)
    assert len(g_train) + len(g_test) == len(data)
    assert sorted([*Y_train.index, *Y_test.index]) == sorted(data.Y.index)
    assert Y_test.index.equals(paths_test.index) and g_test.index.equals(Y_test.index)
    n_patients = data.groups.nunique()
    assert g_test.nunique() == math.ceil(0.25 * n_patients)  # GroupShuffleSplit's rounding
    again = train_test_split_by_patient(data.Y, groups=data.groups, test_size=0.25, random_state=0)
    assert again[1].index.equals(Y_test.index)
    with pytest.raises(ValueError, match="lengths"):
        train_test_split_by_patient(data.Y, groups=data.groups[:-1])


# ---- balanced subsets -------------------------------------------------------


@pytest.fixture(scope="module")
def excerpt_Y(metadata_file):
    return load_nih_chestxray14(metadata=metadata_file, require_images=False).Y


def _check_documented_guarantees(Y, indices, summary, include_no_finding=True):
    Y = np.asarray(Y)
    positives = np.column_stack([Y, Y.sum(axis=1) == 0]) if include_no_finding else Y
    np.testing.assert_array_equal(summary["available"], positives.sum(axis=0))
    np.testing.assert_array_equal(
        summary["target"], np.minimum(summary["requested"], summary["available"])
    )
    # Achieved counts are the real counts of the subset, co-occurrence included.
    np.testing.assert_array_equal(summary["achieved"], positives[indices].sum(axis=0))
    assert (summary["achieved"] >= summary["target"]).all()
    assert len(indices) <= summary["target"].sum()
    assert np.array_equal(indices, np.unique(indices))
    # Every image was taken for some label it has.
    assert positives[indices].any(axis=1).all()


def test_balanced_subset_on_the_real_excerpt(excerpt_Y):
    indices, summary = balanced_subset(excerpt_Y, 6, random_state=0)

    _check_documented_guarantees(excerpt_Y, indices, summary)
    assert summary.index.tolist() == [*NIH_PATHOLOGIES, NO_FINDING]
    # No Finding images have no other label: exactly the target.
    assert summary.loc[NO_FINDING, "achieved"] == 6
    # Co-occurrence makes some labels exceed the target on this excerpt.
    assert (summary["achieved"] > summary["target"]).any()


def test_balanced_subset_is_deterministic_with_random_state(excerpt_Y):
    first, _ = balanced_subset(excerpt_Y, 5, random_state=1)
    again, _ = balanced_subset(excerpt_Y, 5, random_state=1)
    other, _ = balanced_subset(excerpt_Y, 5, random_state=2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_balanced_subset_without_cooccurrence_is_exact():
    labels = np.repeat(np.arange(4), [50, 20, 3, 40])
    Y = np.eye(4, dtype=int)[labels]
    indices, summary = balanced_subset(
        Y, 10, labels=["a", "b", "c", "d"], include_no_finding=False, random_state=0
    )
    assert summary["achieved"].tolist() == [10, 10, 3, 10]
    assert len(indices) == 33
    assert set(np.flatnonzero(labels == 2)) <= set(indices)  # the rare label entirely


def test_balanced_subset_options_and_errors(excerpt_Y):
    indices, summary = balanced_subset(
        excerpt_Y.to_numpy(), 4, labels=list(NIH_PATHOLOGIES), n_no_finding=0, random_state=0
    )
    _check_documented_guarantees(excerpt_Y, indices, summary)
    assert summary.loc[NO_FINDING, "achieved"] == 0

    indices, summary = balanced_subset(excerpt_Y, 4, include_no_finding=False, random_state=0)
    _check_documented_guarantees(excerpt_Y, indices, summary, include_no_finding=False)
    assert NO_FINDING not in summary.index

    with pytest.raises(ValueError, match="n_per_label must be a non-negative int"):
        balanced_subset(excerpt_Y, -1)
    with pytest.raises(ValueError, match=r"Y\[0, 'b'\] is 2"):
        balanced_subset([[0, 2]], 1, labels=["a", "b"])


def test_balanced_subset_on_data_set_sized_input(excerpt_Y):
    # 112,120 rows drawn from the real excerpt: the size of the full data set.
    rng = np.random.RandomState(0)
    Y = excerpt_Y.iloc[rng.randint(0, len(excerpt_Y), 112_120)].reset_index(drop=True)
    indices, summary = balanced_subset(Y, 500, random_state=0)
    _check_documented_guarantees(Y, indices, summary)
    assert (summary["target"] == 500).all()


@settings(max_examples=40, deadline=None)
@given(
    Y=arrays(
        np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 5)), elements=st.integers(0, 1)
    ),
    n=st.integers(0, 8),
    include_no_finding=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_balanced_subset_guarantees_hold_for_any_matrix(Y, n, include_no_finding, seed):
    indices, summary = balanced_subset(
        Y, n, labels=[f"l{j}" for j in range(Y.shape[1])],
        include_no_finding=include_no_finding, random_state=seed,
    )
    _check_documented_guarantees(Y, indices, summary, include_no_finding)
