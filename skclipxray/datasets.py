"""NIH ChestX-ray14: read the metadata, find the images on disk, sample balanced subsets.

The official download is 45 GB in twelve archives; most users hold a part of it.
:func:`load_nih_chestxray14` reads the official metadata file
(``Data_Entry_2017.csv``, 2020 revision, plain or gzipped), keeps the images that
are on disk and says how many rows it dropped. Labels are split exactly on
``|`` (never matched as substrings) into the 14 pathologies of
:data:`~skclipxray.labels.NIH_PATHOLOGIES`; "No Finding" is a row of zeros.
Nothing is filtered out by default: all views, all follow-up images.
"""

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils import check_random_state

from .labels import NIH_PATHOLOGIES
from ._validation import check_label_matrix

__all__ = [
    "METADATA_FILENAMES",
    "NO_FINDING",
    "MissingImagesWarning",
    "NIHChestXray14",
    "balanced_subset",
    "load_nih_chestxray14",
    "train_test_split_by_patient",
]

#: The pseudo-label of images without any of the 14 pathologies.
NO_FINDING = "No Finding"

#: Names under which the metadata file is looked up in the image root, in order.
METADATA_FILENAMES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
)

# Official column -> tidy column. The 2020 header splits "OriginalImage[Width,Height]"
# and "OriginalImagePixelSpacing[x,y]" into two columns each.
_REQUIRED_COLUMNS = {
    "Image Index": "image_index",
    "Finding Labels": "finding_labels",
    "Follow-up #": "follow_up",
    "Patient ID": "patient_id",
    "Patient Age": "age",
    "View Position": "view_position",
}
_SEX_COLUMNS = ("Patient Gender", "Patient Sex")
_OPTIONAL_COLUMNS = {
    "OriginalImage[Width": "original_width",
    "Height]": "original_height",
    "OriginalImagePixelSpacing[x": "pixel_spacing_x",
    "y]": "pixel_spacing_y",
}
_SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
_IMAGE_SUFFIX = ".png"


class MissingImagesWarning(UserWarning):
    """Rows of the metadata were dropped because their image is not on disk."""


@dataclass
class NIHChestXray14:
    """The loaded NIH ChestX-ray14 data set (or the part of it on disk).

    Every table is indexed by the image file name (``image_index``) and in the
    order of the metadata file.

    Attributes
    ----------
    paths : pandas.Series of str
        Path of each image (``None`` for images not on disk when loaded with
        ``require_images=False``).
    Y : pandas.DataFrame of uint8
        One 0/1 column per pathology, in the order of
        :data:`~skclipxray.labels.NIH_PATHOLOGIES`. "No Finding" is all zeros.
    groups : pandas.Series of int
        Patient id of each image, for grouped splits and bootstraps.
    metadata : pandas.DataFrame
        ``finding_labels``, ``follow_up``, ``patient_id``, ``age``, ``sex``,
        ``view_position`` and, when the file has them, ``original_width``,
        ``original_height``, ``pixel_spacing_x``, ``pixel_spacing_y``.
    n_metadata_rows : int
        Rows in the metadata file.
    n_dropped_missing : int
        Rows dropped because their image is not on disk.
    n_dropped_filters : int
        Rows dropped by ``split``, ``views`` and ``follow_up``.
    metadata_path : str
        The metadata file that was read.
    """

    paths: pd.Series
    Y: pd.DataFrame
    groups: pd.Series
    metadata: pd.DataFrame
    n_metadata_rows: int
    n_dropped_missing: int
    n_dropped_filters: int
    metadata_path: str

    def __len__(self):
        return len(self.Y)

    @property
    def summary(self):
        """str : A few lines on what was loaded and what was dropped."""
        counts = self.Y.sum(axis=0)
        n_no_finding = int((self.Y.sum(axis=1) == 0).sum())
        per_label = ", ".join(f"{name} {int(c)}" for name, c in counts.items())
        return (
            f"NIH ChestX-ray14: {len(self)} images of {self.groups.nunique()} "
            f"patients, from {self.n_metadata_rows} metadata rows "
            f"({self.metadata_path}).\n"
            f"Dropped: {self.n_dropped_missing} rows whose image is not on disk, "
            f"{self.n_dropped_filters} by the split/views/follow_up filters.\n"
            f"Positives: {per_label}; {NO_FINDING} {n_no_finding}."
        )

    def __repr__(self):
        return (
            f"<NIHChestXray14: {len(self)} images, {self.groups.nunique()} patients, "
            f"{self.n_dropped_missing} rows dropped for missing images>"
        )


def load_nih_chestxray14(
    image_root=None,
    *,
    metadata=None,
    views="all",
    follow_up="all",
    split=None,
    require_images=True,
):
    """Load NIH ChestX-ray14 metadata, labels and the image paths found on disk.

    Rows are kept in the order of the metadata file and go through these steps:
    the official ``split`` list, then ``views``, then the images on disk, then
    ``follow_up``. So ``follow_up="first"`` with ``views="PA"`` keeps, per
    patient, the first PA image that was downloaded.

    Parameters
    ----------
    image_root : str or path-like, optional
        Folder of the download. Images are looked for (without recursion) in
        ``image_root``, ``image_root/images``, ``image_root/images_*`` and
        ``image_root/images_*/images`` (the folders of the twelve archives
        ``images_001`` ... ``images_012``). The folders are listed once, so
        looking up 112,120 rows costs one directory listing per folder.
    metadata : str or path-like, optional
        The metadata CSV (plain or ``.gz``). By default the first of
        :data:`METADATA_FILENAMES` found in ``image_root``.
    views : "all", str or sequence of str, default="all"
        View positions to keep, e.g. ``"PA"`` or ``("PA", "AP")``.
    follow_up : {"all", "first"}, default="all"
        ``"all"`` keeps every image. ``"first"`` keeps one image per patient:
        the one with the lowest ``Follow-up #`` among the rows left by the
        other filters (on the full data set that is ``Follow-up # == 0``).
    split : {None, "train_val", "test"}, default=None
        Keep only the images of the official list (``train_val_list.txt`` or
        ``test_list.txt``), looked up in ``image_root`` then beside the metadata.
    require_images : bool, default=True
        Drop the rows whose image is not on disk, with a
        :class:`MissingImagesWarning` giving their number. With ``False`` every
        row is kept and the path of an image not found is ``None``; the
        image root may then be omitted to read the metadata alone.

    Returns
    -------
    NIHChestXray14
        ``paths``, ``Y``, ``groups``, ``metadata``, the numbers of dropped rows
        and a ``summary`` text.

    Raises
    ------
    FileNotFoundError
        If the metadata or a split list cannot be found, or no image of the
        metadata is under ``image_root``.
    ValueError
        If the metadata is malformed (missing column, unknown label, bad value,
        duplicate image): the message names the file, line and image.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "Data_Entry_2017.csv").write_text(
    ...     "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,"
    ...     "Patient Gender,View Position\\n"
    ...     "00000001_000.png,Cardiomegaly|Effusion,0,1,57,M,PA\\n"
    ...     "00000002_000.png,No Finding,0,2,80,M,AP\\n")
    >>> data = load_nih_chestxray14(root, require_images=False)
    >>> data.Y.loc["00000001_000.png", ["Cardiomegaly", "Effusion", "Mass"]].tolist()
    [1, 1, 0]
    >>> int(data.Y.loc["00000002_000.png"].sum()), data.groups.tolist()
    (0, [1, 2])
    >>> import shutil; shutil.rmtree(root)
    """
    if image_root is None and require_images:
        raise ValueError(
            "image_root is required to find the images; pass require_images=False "
            "(and metadata=...) to read the metadata alone."
        )
    metadata_path = _find_metadata(image_root, metadata)
    meta, Y = _read_metadata(metadata_path)
    n_rows = len(meta)

    keep = np.ones(n_rows, dtype=bool)
    if split is not None:
        listed = _read_split_list(split, image_root, metadata_path)
        keep &= meta.index.isin(listed)
    keep &= _view_mask(meta["view_position"], views)
    n_after_filters = int(keep.sum())

    on_disk = _index_image_files(image_root) if image_root is not None else {}
    paths = pd.Series(
        [on_disk.get(name) for name in meta.index], index=meta.index, dtype=object, name="path"
    )
    n_missing = 0
    if require_images:
        present = paths.notna().to_numpy()
        n_missing = int((keep & ~present).sum())
        if not (keep & present).any():
            raise FileNotFoundError(
                f"None of the {n_after_filters} images selected from "
                f"{metadata_path} is under {os.fspath(image_root)!r} (looked in "
                "it and in images/, images_*/ and images_*/images/)."
            )
        keep &= present

    if follow_up == "first":
        keep &= _first_follow_up_mask(meta, keep)
    elif follow_up != "all":
        raise ValueError(f"follow_up must be 'all' or 'first', got {follow_up!r}.")

    if not keep.any():
        raise ValueError(
            f"No row of {metadata_path} is left after split={split!r}, "
            f"views={views!r}, follow_up={follow_up!r}."
        )
    if n_missing:
        warnings.warn(
            f"{n_missing} of {n_after_filters} rows of {metadata_path} were dropped "
            f"because their image is not under {os.fspath(image_root)!r}.",
            MissingImagesWarning,
            stacklevel=2,
        )
    meta = meta[keep]
    return NIHChestXray14(
        paths=paths[keep],
        Y=Y[keep],
        groups=meta["patient_id"].rename("patient_id"),
        metadata=meta,
        n_metadata_rows=n_rows,
        n_dropped_missing=n_missing,
        n_dropped_filters=n_rows - n_missing - int(keep.sum()),
        metadata_path=metadata_path,
    )


def _find_metadata(image_root, metadata):
    if metadata is not None:
        if not os.path.isfile(metadata):
            raise FileNotFoundError(f"metadata file {os.fspath(metadata)!r} does not exist.")
        return os.fspath(metadata)
    if image_root is None:
        raise ValueError("Pass image_root or metadata=.")
    for name in METADATA_FILENAMES:
        candidate = os.path.join(image_root, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"No metadata file in {os.fspath(image_root)!r}: looked for "
        f"{', '.join(METADATA_FILENAMES)}; pass metadata=PATH."
    )


def _read_metadata(path):
    """Read and check the metadata file; return (tidy metadata, label matrix)."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise ValueError(f"Malformed metadata file {path}: {exc}") from exc
    except (pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"Cannot read metadata file {path}: {exc}") from exc

    sex_column = next((c for c in _SEX_COLUMNS if c in raw.columns), None)
    missing = [c for c in _REQUIRED_COLUMNS if c not in raw.columns]
    if sex_column is None:
        missing.append(" or ".join(_SEX_COLUMNS))
    if missing:
        raise ValueError(
            f"Metadata file {path} lacks the column(s) {missing}; "
            f"it has {list(raw.columns)}."
        )
    columns = {**_REQUIRED_COLUMNS, sex_column: "sex"}
    columns.update({k: v for k, v in _OPTIONAL_COLUMNS.items() if k in raw.columns})
    raw = raw[list(columns)].fillna("").rename(columns=columns)

    def fail(row, message):
        # Line 1 is the header; the first data row is line 2.
        name = raw["image_index"].iat[row]
        raise ValueError(f"{path}, line {row + 2} (image {name!r}): {message}")

    for column in [*_REQUIRED_COLUMNS.values(), "sex"]:
        empty = np.flatnonzero(raw[column].to_numpy() == "")
        if empty.size:
            fail(empty[0], f"'{column}' is empty (too few fields?).")
    duplicated = np.flatnonzero(raw["image_index"].duplicated().to_numpy())
    if duplicated.size:
        fail(duplicated[0], "this image is listed twice.")

    for column in ("follow_up", "patient_id", "age"):
        values = pd.to_numeric(raw[column], errors="coerce")
        if column == "age" and values.isna().any():
            # Older releases wrote ages as "058Y".
            values = pd.to_numeric(raw[column].str.removesuffix("Y"), errors="coerce")
        bad = np.flatnonzero((values.isna() | (values % 1 != 0)).to_numpy())
        if bad.size:
            fail(bad[0], f"'{column}' is {raw[column].iat[bad[0]]!r}, not a whole number.")
        raw[column] = values.astype(np.int64)
    for column in ("original_width", "original_height", "pixel_spacing_x", "pixel_spacing_y"):
        if column in raw.columns:
            raw[column] = pd.to_numeric(raw[column], errors="coerce")

    Y = _parse_finding_labels(raw["finding_labels"], fail)
    raw = raw.set_index("image_index")
    Y.index = raw.index
    return raw, Y


def _parse_finding_labels(finding_labels, fail):
    """Split on "|" exactly and one-hot encode; report the first bad row."""
    tokens = finding_labels.str.split("|").explode()
    rows = tokens.index.to_numpy()
    names = tokens.astype(str)
    vocabulary = list(NIH_PATHOLOGIES) + [NO_FINDING]
    codes = pd.Index(vocabulary).get_indexer(names)
    unknown = np.flatnonzero(codes < 0)
    if unknown.size:
        label = names.iat[unknown[0]]
        fail(
            rows[unknown[0]],
            f"unknown label {label!r} in {finding_labels.iat[rows[unknown[0]]]!r}; "
            f"labels are {vocabulary}, joined by '|'.",
        )
    n_labels = len(NIH_PATHOLOGIES)
    Y = np.zeros((len(finding_labels), n_labels), dtype=np.uint8)
    is_pathology = codes < n_labels
    Y[rows[is_pathology], codes[is_pathology]] = 1
    no_finding_rows = rows[codes == n_labels]
    contradicting = no_finding_rows[Y[no_finding_rows].any(axis=1)]
    if contradicting.size:
        fail(
            contradicting[0],
            f"'{NO_FINDING}' together with a pathology in "
            f"{finding_labels.iat[contradicting[0]]!r}.",
        )
    return pd.DataFrame(Y, columns=list(NIH_PATHOLOGIES))


def _index_image_files(image_root):
    """Map file name -> path for the PNGs in the folders of the official layout."""
    root = Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"image_root {os.fspath(image_root)!r} is not a folder.")
    folders = [root, root / "images"]
    for archive in sorted(root.glob("images_*")):
        folders += [archive, archive / "images"]
    found = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(_IMAGE_SUFFIX) and entry.is_file():
                    found.setdefault(entry.name, entry.path)
    return found


def _read_split_list(split, image_root, metadata_path):
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be None, 'train_val' or 'test', got {split!r}.")
    name = _SPLIT_FILES[split]
    folders = [image_root] if image_root is not None else []
    folders.append(os.path.dirname(metadata_path))
    for folder in folders:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            with open(candidate) as file:
                return [line.strip() for line in file if line.strip()]
    raise FileNotFoundError(
        f"split={split!r} needs the official {name}; not found in "
        f"{[os.fspath(f) for f in folders]}."
    )


def _view_mask(view_position, views):
    if isinstance(views, str) and views == "all":
        return np.ones(len(view_position), dtype=bool)
    wanted = [views] if isinstance(views, str) else list(views)
    present = set(view_position.unique())
    unknown = [v for v in wanted if v not in present]
    if not wanted or unknown:
        raise ValueError(
            f"views={views!r}: {unknown or 'empty'} not among the view positions "
            f"of the metadata {sorted(present)} (or use 'all')."
        )
    return view_position.isin(wanted).to_numpy()


def _first_follow_up_mask(meta, keep):
    candidates = meta.loc[keep, ["patient_id", "follow_up"]]
    # A stable sort keeps file order among equal follow-up numbers.
    first = candidates.sort_values("follow_up", kind="stable").drop_duplicates("patient_id")
    return meta.index.isin(first.index)


def train_test_split_by_patient(*arrays, groups, test_size=0.2, random_state=None):
    """Split arrays into train and test sets with no patient on both sides.

    A grouped version of :func:`sklearn.model_selection.train_test_split`,
    built on :class:`sklearn.model_selection.GroupShuffleSplit`.

    Parameters
    ----------
    *arrays : sequence of indexables
        Lists, arrays, Series or DataFrames of the same length (rows are taken
        by position).
    groups : array-like of shape (n_samples,)
        Patient id of each row.
    test_size : float or int, default=0.2
        Fraction (float) or number (int) of *patients* in the test set.
    random_state : int, RandomState instance or None, default=None
        Seed of the shuffle.

    Returns
    -------
    list
        ``[a_train, a_test, b_train, b_test, ...]``, two items per array.

    Examples
    --------
    >>> X = list(range(6))
    >>> X_train, X_test = train_test_split_by_patient(
    ...     X, groups=[1, 1, 2, 2, 3, 3], test_size=1, random_state=0)
    >>> len(X_train), len(X_test)
    (4, 2)
    """
    if not arrays:
        raise ValueError("At least one array is required.")
    groups = np.asarray(groups)
    lengths = {len(a) for a in arrays}
    if lengths != {len(groups)}:
        raise ValueError(
            f"The arrays have lengths {sorted(lengths)} but groups has {len(groups)}."
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=random_state)
    train, test = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return [part for a in arrays for part in (_take(a, train), _take(a, test))]


def _take(array, indices):
    if hasattr(array, "iloc"):
        return array.iloc[indices]
    if isinstance(array, np.ndarray):
        return array[indices]
    return [array[i] for i in indices]


def balanced_subset(
    Y,
    n_per_label,
    *,
    labels=None,
    include_no_finding=True,
    n_no_finding=None,
    random_state=None,
):
    """Sample images so that every label has ``n_per_label`` positives, if it can.

    Labels are served rarest first. For each, the images still missing are
    drawn at random among its unselected positives, preferring images whose
    other labels have not yet reached their target. A selected image counts
    for every label it has, so:

    - every label gets at least ``min(n_per_label, available)`` positives;
    - a label can get more when co-occurring labels bring its images in
      (Infiltration does, on ChestX-ray14); "No Finding" images have no other
      label, so "No Finding" gets exactly its target;
    - no image is taken that no label needed: the subset has at most the sum
      of the targets.

    The result depends only on ``Y`` and ``random_state``.

    Parameters
    ----------
    Y : array-like or DataFrame of shape (n_samples, n_labels)
        0/1 label matrix; a DataFrame's columns name the labels.
    n_per_label : int
        Positives wanted per label.
    labels : sequence of str, optional
        Label names when ``Y`` is not a DataFrame.
    include_no_finding : bool, default=True
        Also sample images without any label ("No Finding").
    n_no_finding : int, optional
        "No Finding" images wanted; defaults to ``n_per_label``.
    random_state : int, RandomState instance or None, default=None
        Seed of the draw.

    Returns
    -------
    indices : ndarray of int
        Sorted row positions of the subset in ``Y``.
    summary : pandas.DataFrame
        Per label (and "No Finding"): ``available``, ``requested``,
        ``target`` (= min(requested, available)) and ``achieved`` positives.

    Examples
    --------
    >>> import pandas as pd
    >>> Y = pd.DataFrame({"Mass": [1, 1, 1, 0, 0, 0], "Hernia": [0, 1, 0, 0, 0, 0]})
    >>> indices, summary = balanced_subset(Y, 2, random_state=0)
    >>> summary["achieved"].tolist()
    [2, 1, 2]
    >>> bool(1 in indices)  # the only Hernia image
    True
    """
    Y, labels = check_label_matrix(Y, labels, name="Y")
    n_no_finding = n_per_label if n_no_finding is None else n_no_finding
    for name, value in (("n_per_label", n_per_label), ("n_no_finding", n_no_finding)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}.")

    positives = Y.astype(bool)
    requested = np.full(len(labels), n_per_label)
    if include_no_finding:
        if NO_FINDING in labels:
            raise ValueError(
                f"Y already has a {NO_FINDING!r} column; use include_no_finding=False."
            )
        positives = np.column_stack([positives, ~positives.any(axis=1)])
        labels = labels + [NO_FINDING]
        requested = np.append(requested, n_no_finding)

    available = positives.sum(axis=0)
    target = np.minimum(requested, available)
    rng = check_random_state(random_state)
    priority = rng.permutation(len(positives))
    selected = np.zeros(len(positives), dtype=bool)
    achieved = np.zeros(len(labels), dtype=np.int64)
    for j in np.argsort(available, kind="stable"):
        need = target[j] - achieved[j]
        if need <= 0:
            continue
        candidates = np.flatnonzero(positives[:, j] & ~selected)
        # Prefer candidates that do not push already-satisfied labels further.
        overshoot = positives[candidates][:, achieved >= target].sum(axis=1)
        chosen = candidates[np.lexsort((priority[candidates], overshoot))[:need]]
        selected[chosen] = True
        achieved += positives[chosen].sum(axis=0)

    summary = pd.DataFrame(
        {"available": available, "requested": requested, "target": target, "achieved": achieved},
        index=pd.Index(labels, name="label"),
    )
    return np.flatnonzero(selected), summary
