"""The ``skclipxray`` command: demo, experiment (twice, cached) and embed."""

import json

import numpy as np
import pandas as pd
import pytest

from skclipxray import load_backbone
from skclipxray.cli import main
from skclipxray.persistence import load
from skclipxray.testing import make_synthetic_nih

FAST = ["--max-epochs", "3", "--hidden-sizes", "16", "--n-per-label", "6"]
PROMISED = [
    "config.json",
    "metrics.csv",
    "metrics.md",
    "per_label_roc_auc.csv",
    "roc_curves.png",
    "subset.csv",
    "train_sizes.csv",
    "train_sizes.md",
    "train_sizes.png",
    "embeddings.sqlite",
]
MODELS = [
    "zero-shot",
    "baseline",
    "concat-fusion",
    "concat-fusion (random prompts)",
    "weighted-sum",
    "weighted-sum (random prompts)",
]


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih")
    make_synthetic_nih(root, n_images=60, image_size=32, prevalence=0.15)
    return root


def _check_results(out_dir):
    for name in PROMISED:
        assert (out_dir / name).is_file(), name
    metrics = pd.read_csv(out_dir / "metrics.csv", index_col="model")
    assert list(metrics.index) == MODELS
    assert metrics["roc_auc_macro"].between(0, 1).all()
    assert (metrics["hamming_loss"] >= 0).all()
    for model in MODELS:
        file = model.replace(" (", "-").replace(")", "").replace(" ", "-")
        assert (out_dir / "models" / f"{file}.skops").is_file(), file
    assert (out_dir / "roc_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_writes_every_promised_file(tmp_path, tiny_model_dir, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out", str(out_dir), "--model", str(tiny_model_dir),
                 "--n-images", "60", "--train-sizes", "10", "20", *FAST]) == 0
    _check_results(out_dir)
    printed = capsys.readouterr().out
    assert "roc_auc_macro" in printed
    curve = pd.read_csv(out_dir / "train_sizes.csv")
    assert sorted(curve["train_size"].unique()) == [10, 20]
    assert set(curve["model"]) == set(MODELS)


def test_demo_says_plainly_when_the_model_is_random(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKCLIPXRAY_MODEL", "tiny")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    main(["demo", "--out", str(tmp_path / "demo"), "--n-images", "40",
          "--train-sizes", "10", *FAST])
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed
    assert "not medicine" in printed


def test_experiment_twice_embeds_nothing_new(tmp_path, nih_root, tiny_model_dir, capsys):
    out_dir = tmp_path / "run"
    args = ["experiment", "--nih-root", str(nih_root), "--model", str(tiny_model_dir),
            "--out", str(out_dir), "--train-sizes", "10", *FAST]
    main(args)
    first = capsys.readouterr().out
    _check_results(out_dir)
    n_images = len(pd.read_csv(out_dir / "subset.csv"))
    assert f"({n_images} computed, 0 from the cache" in first

    main(args)
    second = capsys.readouterr().out
    assert f"(0 computed, {n_images} from the cache" in second
    config = json.loads((out_dir / "config.json").read_text())
    assert config["model"] == str(tiny_model_dir)
    assert config["n_per_label"] == 6


def test_split_and_saved_pipelines(tmp_path, nih_root, tiny_model_dir):
    out_dir = tmp_path / "run"
    main(["experiment", "--nih-root", str(nih_root), "--model", str(tiny_model_dir),
          "--out", str(out_dir), *FAST])
    subset = pd.read_csv(out_dir / "subset.csv")
    # A saved pipeline takes image paths and gives one probability per label.
    pipeline = load(out_dir / "models" / "weighted-sum.skops")
    proba = pipeline.predict_proba(list(subset["path"][:4]))
    assert proba.shape == (4, 14)
    assert ((proba >= 0) & (proba <= 1)).all()
    sides = subset.groupby("patient_id")["split"].nunique()
    assert (sides == 1).all()
    assert set(subset["split"]) == {"train", "test"}


def test_embed_folder_then_csv_resumes_from_the_cache(tmp_path, nih_root, tiny_model_dir, capsys):
    out = tmp_path / "embeddings.csv"
    main(["embed", str(nih_root / "images"), "--out", str(out), "--model", str(tiny_model_dir)])
    assert "60 images: 60 embedded, 0 from the cache" in capsys.readouterr().out
    frame = pd.read_csv(out, index_col="path")
    assert frame.shape == (60, 32)
    assert np.isfinite(frame.to_numpy()).all()

    listing = tmp_path / "list.csv"
    pd.DataFrame({"path": frame.index[:5]}).to_csv(listing, index=False)
    npz = tmp_path / "five.npz"
    main(["embed", str(listing), "--out", str(npz), "--model", str(tiny_model_dir),
          "--cache", str(out) + ".sqlite"])
    assert "5 images: 0 embedded, 5 from the cache" in capsys.readouterr().out
    saved = np.load(npz)
    np.testing.assert_allclose(saved["embeddings"], frame.to_numpy()[:5], rtol=1e-5)


def test_embed_quantized_implies_compile_and_keeps_its_own_cache_entries(
    tmp_path, nih_root, tiny_model_dir, capsys, monkeypatch
):
    import torch

    modes = []

    def fake_compile(module, mode=None):  # compiling is torch's to test
        modes.append(mode)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(load_backbone(tiny_model_dir, device="cpu"), "_vision_models", {})
    images = sorted((nih_root / "images").iterdir())[:4]
    out, cache = tmp_path / "float.csv", str(tmp_path / "cache.sqlite")
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--cache", cache]
    main(["embed", *map(str, images), "--out", str(out), *common])
    main(["embed", *map(str, images), "--out", str(tmp_path / "int8.csv"),
          "--quantize", "int8", *common])
    main(["embed", *map(str, images), "--out", str(tmp_path / "again.csv"),
          "--quantize", "int8", "--compile", "max-autotune", *common])
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(";")[0] for line in printed] == [
        f"4 images: 4 embedded, 0 from the cache {cache}",
        f"4 images: 4 embedded, 0 from the cache {cache}",  # float entries are not int8 ones
        f"4 images: 0 embedded, 4 from the cache {cache}",
    ]
    assert modes == ["default"]
    floats, int8 = (pd.read_csv(tmp_path / name, index_col="path").to_numpy()
                    for name in ("float.csv", "int8.csv"))
    assert not np.array_equal(floats, int8)
    np.testing.assert_allclose(int8, floats, atol=0.1)


def test_embed_reports_a_missing_csv_column(tmp_path, tiny_model_dir):
    listing = tmp_path / "list.csv"
    listing.write_text("file\na.png\n")
    with pytest.raises(SystemExit, match="no column 'path'"):
        main(["embed", str(listing), "--out", str(tmp_path / "x.csv"),
              "--model", str(tiny_model_dir)])
