"""The ``skclipxray`` command: demo, experiment (twice, cached) and embed."""

import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import skclipxray.experiment
import skclipxray.testing
from skclipxray import SigLIPImageEmbedder, load_backbone
from skclipxray.cli import _config, build_parser, main
from skclipxray.experiment import ExperimentConfig
from skclipxray.persistence import load
from skclipxray.testing import make_synthetic_nih

FAST = ["--max-epochs", "3", "--hidden-sizes", "16", "--n-per-label", "6",
        "--shots", "2", "all", "--n-draws", "1"]
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
    "label_efficiency.csv",
    "label_efficiency_draws.csv",
    "label_efficiency.md",
    "label_efficiency.png",
    "embeddings.sqlite",
]
MODELS = [
    "zero-shot",
    "baseline",
    "concat-fusion",
    "concat-fusion (random prompts)",
    "weighted-sum",
    "weighted-sum (random prompts)",
    "text-anchored",
    "text-anchored (random prompts)",
    "tip-adapter",
    "tip-adapter (random prompts)",
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


def _subcommands():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices


def _flat(text):
    return " ".join(text.split())


def _typed(default):
    """A default as the user would type it."""
    if isinstance(default, (list, tuple)):
        return " ".join(map(str, default)) if default else "none"
    return str(default)


def test_every_option_has_help_that_shows_its_default():
    subcommands = _subcommands()
    assert sorted(subcommands) == ["demo", "embed", "experiment", "models"]
    for name, parser in subcommands.items():
        shown = _flat(parser.format_help())
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help"
            assert _flat(action.help) in shown, where
            if action.required or not action.option_strings:
                continue
            if action.default is None:  # the help says what happens then
                assert re.search(r"\(default: [^)]+\)$", action.help), where
            else:
                assert action.help.endswith(f"(default: {_typed(action.default)})"), where


def test_experiment_help_shows_the_defaults_of_the_config_and_the_embedder():
    config = ExperimentConfig(nih_root="", out_dir="")
    embedder = SigLIPImageEmbedder()
    parsers = _subcommands()
    experiment = parsers["experiment"].parse_args(["--nih-root", "x"])
    assert experiment.n_per_label == config.n_per_label == 200
    assert tuple(experiment.hidden_sizes) == config.hidden_sizes == (512, 256)
    assert experiment.max_epochs == config.max_epochs
    assert experiment.batch_size == config.embed_batch_size
    assert experiment.model is None  # the config's default, which the help shows
    assert f"(default: {config.model})" in _flat(parsers["experiment"].format_help())
    for option in ("test_size", "device", "dtype", "random_state", "views", "follow_up",
                   "shots", "n_draws", "operating_point", "calibration", "validation_size",
                   "n_boot"):
        assert getattr(experiment, option) == getattr(config, option), option
    assert config.shots == [1, 2, 4, 8, 16, 32, 64, "all"]
    embed = parsers["embed"].parse_args(["x.png", "--out", "x.csv"])
    for option in ("model", "device", "dtype", "batch_size"):
        assert getattr(embed, option) == getattr(embedder, option), option


def _help_defaults(parser):
    """``{option: shown default}`` read back from the formatted help."""
    text = _flat(parser.format_help()).split(" options: ", 1)[1]
    return dict(re.findall(r"(--[a-z-]+)[^()]*?\(default: ([^)]*)\)", text))


def test_demo_help_shows_what_the_demo_runs(tmp_path, tiny_model_dir, monkeypatch):
    runs, generated = [], []

    def fake_run(config):
        runs.append(config)
        return pd.DataFrame({c: [0.5] for c in ["roc_auc_macro", "f1_macro",
                                                "hamming_loss", "exact_match"]})

    monkeypatch.setattr(skclipxray.experiment, "run_experiment", fake_run)
    monkeypatch.setattr(skclipxray.testing, "demo_model", lambda m: (str(tiny_model_dir), False))
    monkeypatch.setattr(skclipxray.testing, "make_synthetic_nih",
                        lambda root, n_images, **kw: generated.append(n_images))
    main(["demo", "--out", str(tmp_path / "demo")])

    (config,) = runs
    shown = _help_defaults(_subcommands()["demo"])
    assert shown["--n-images"] == str(generated[0]) == "400"
    assert shown["--n-per-label"] == str(config.n_per_label) == "40"
    assert shown["--hidden-sizes"] == _typed(config.hidden_sizes) == "128 64"
    assert shown["--max-epochs"] == str(config.max_epochs) == "40"
    assert shown["--train-sizes"] == _typed(config.train_sizes) == "25 50 100"
    assert shown["--shots"] == _typed(config.shots) == "1 4 16 all"
    assert shown["--n-draws"] == str(config.n_draws) == "2"
    assert shown["--test-size"] == str(config.test_size)
    assert shown["--batch-size"] == str(config.embed_batch_size)
    assert shown["--random-state"] == str(config.random_state)
    assert shown["--device"] == config.device
    assert shown["--dtype"] == config.dtype


def test_every_training_set_size_of_the_demo_fits_its_training_set(
    tmp_path, tiny_model_dir, monkeypatch
):
    from skclipxray.datasets import (
        balanced_subset,
        load_nih_chestxray14,
        train_test_split_by_patient,
    )

    runs = []
    monkeypatch.setattr(skclipxray.experiment, "run_experiment", runs.append)
    monkeypatch.setattr("skclipxray.cli._print_results", lambda *args: None)
    main(["demo", "--out", str(tmp_path / "demo"), "--model", str(tiny_model_dir)])
    (config,) = runs
    data = load_nih_chestxray14(config.nih_root)
    indices, _ = balanced_subset(data.Y, config.n_per_label, random_state=config.random_state)
    train, _ = train_test_split_by_patient(
        indices, groups=data.groups.iloc[indices], test_size=config.test_size,
        random_state=config.random_state,
    )
    assert max(config.train_sizes) < len(train)
    # Every number of positives of the sweep draws fewer than the training set holds.
    fewest = data.Y.iloc[train].sum(axis=0).min()
    assert max(k for k in config.shots if k != "all") < fewest


@pytest.mark.parametrize("argv, shots, n_draws", [
    (["--shots", "1", "4", "all"], [1, 4, "all"], 5),
    (["--shots", "all", "--n-draws", "3"], ["all"], 3),
    (["--shots"], [], 5),  # no sweep
])
def test_shots_and_draws_are_parsed(argv, shots, n_draws):
    args = _subcommands()["experiment"].parse_args(["--nih-root", "x", *argv])
    assert args.shots == shots
    assert args.n_draws == n_draws
    config = _config(args, "x", "m", "out")
    assert (config.shots, config.n_draws) == (shots, n_draws)


@pytest.mark.parametrize("argv, model", [
    ([], "StanfordAIMI/XraySigLIP__vit-b-16-siglip-512__webli"),
    (["--model", "a"], "a"),
    (["--model", "a", "--model", "b"], ["a", "b"]),
    (["--model", "a", "b"], ["a", "b"]),
])
def test_several_models_compare_backbones(argv, model, monkeypatch):
    runs = []
    monkeypatch.setattr(skclipxray.experiment, "run_experiment", runs.append)
    monkeypatch.setattr("skclipxray.cli._print_results", lambda *args: None)
    main(["experiment", "--nih-root", "x", *argv])
    assert runs[0].model == model


@pytest.mark.parametrize("argv, operating_point", [
    ([], ["min_sensitivity", 0.9]),
    (["--operating-point", "youden"], "youden"),
    (["--operating-point", "min_specificity", "0.8"], ["min_specificity", 0.8]),
    (["--operating-point", "min_precision", "high"], ["min_precision", "high"]),
])
def test_the_operating_point_is_parsed(argv, operating_point):
    args = _subcommands()["experiment"].parse_args(["--nih-root", "x", *argv])
    config = _config(args, "x", "m", "out")
    assert config.operating_point == operating_point
    assert (config.calibration, config.validation_size, config.n_boot) == ("temperature", 0.2, 1000)


def test_a_bad_operating_point_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["experiment", "--nih-root", str(tmp_path), "--out", str(out),
                 "--operating-point", "min_precision", "high"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("skclipxray experiment: error: Invalid objective: the level of "
                          "'min_precision' must be a number in (0, 1], got 'high'.")
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--shots", "1", "ALL"], "argument --shots: 'ALL' is neither a positive integer nor 'all'"),
    (["--shots", "0"], "argument --shots: '0' is neither a positive integer nor 'all'"),
    (["--n-draws", "0"], "argument --n-draws: '0' is not a positive integer"),
])
def test_bad_shots_and_draws_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        _subcommands()["experiment"].parse_args(["--nih-root", "x", *argv])
    assert message in capsys.readouterr().err


def test_models_prints_the_table_of_known_checkpoints(capsys):
    from skclipxray.models import KNOWN_CHECKPOINTS, format_known_checkpoints

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out == format_known_checkpoints()
    for checkpoint in KNOWN_CHECKPOINTS:
        assert checkpoint.id in out


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["experiment", "--help"],
                                  ["embed", "--help"], ["models", "--help"]])
def test_help_imports_neither_sklearn_nor_torch_nor_transformers(argv):
    code = (
        "import sys\n"
        "from skclipxray.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = ('sklearn', 'torch', 'transformers', 'pandas')\n"
        "print('imported:', *sorted(m for m in heavy if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert run.stdout.startswith("usage: skclipxray")
    assert run.stdout.splitlines()[-1] == "imported:"


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
    # Each training-set size prints the macro ROC AUC of every model.
    for size, rows in curve.groupby("train_size"):
        expected = ", ".join(f"{m} {v:.3f}" for m, v in zip(rows["model"], rows["roc_auc_macro"]))
        assert f"train size {size}: macro ROC AUC {expected}\n" in printed
    # So does each number of positives of the sweep.
    sweep = pd.read_csv(out_dir / "label_efficiency.csv")
    for shots, what in (("2", "2 positives per label"), ("all", "the whole training set")):
        rows = sweep[sweep["n_positives_per_label"] == shots]
        expected = ", ".join(f"{m} {v:.3f}" for m, v in zip(rows["model"],
                                                             rows["roc_auc_macro_mean"]))
        assert re.search(rf"{what} \(1 draw, \d+ training images on average\): mean macro "
                         rf"ROC AUC {re.escape(expected)}\n", printed), what


def test_demo_says_plainly_when_the_model_is_random(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKCLIPXRAY_MODEL", "tiny")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    main(["demo", "--out", str(tmp_path / "demo"), "--n-images", "40",
          "--train-sizes", "10", *FAST])
    lines = capsys.readouterr().out.splitlines()
    notes = [i for i, line in enumerate(lines) if line.startswith("NOTE:")]
    assert len(notes) == 2
    assert all("RANDOM weights" in lines[i] and "not medicine" in lines[i] for i in notes)
    # The first note comes before the numbers and the last one after them.
    first, last = notes
    table = next(i for i, line in enumerate(lines) if "roc_auc_macro" in line)
    assert "numbers below" in lines[first] and first < table
    assert "numbers above" in lines[last] and last > table
    assert not any(re.search(r"\d\.\d{3}", line) for line in lines[last:])


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
          "--out", str(out_dir), *FAST, "--shots"])
    assert not list(out_dir.glob("label_efficiency*"))  # --shots alone: no sweep
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
    monkeypatch.setattr(load_backbone(tiny_model_dir, device="cpu"), "_image_encoders", {})
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


def test_a_documented_error_is_one_line_without_a_traceback(tmp_path, capsys):
    image = tmp_path / "scan.png"
    image.write_bytes(b"not an image")
    missing = str(tmp_path / "no_such_model")
    status = main(["embed", str(image), "--out", str(tmp_path / "x.csv"), "--model", missing])
    assert status == 1
    err = capsys.readouterr().err
    assert err == (f"skclipxray embed: error: The checkpoint folder {missing!r} was not "
                   f"found (looked for {missing!r}). Check the path, or give a Hugging "
                   "Face model id such as "
                   "'StanfordAIMI/XraySigLIP__vit-b-16-siglip-512__webli'.\n")
