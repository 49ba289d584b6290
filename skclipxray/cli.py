"""The ``skclipxray`` command: ``demo``, ``experiment``, ``embed`` and ``models``."""

import argparse
import dataclasses
import sys
from pathlib import Path

from ._backbone import COMPILE_MODES, DEFAULT_MODEL
from ._quantize import QUANTIZE_MODES

__all__ = ["main"]

# Files a folder given to ``skclipxray embed`` is searched for.
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}

_DTYPES = ("auto", "float32", "bfloat16", "float16")

# What ``skclipxray demo`` runs where it differs from the experiment's defaults:
# a smaller subset and smaller heads, so that it runs soon on a CPU. The parser
# takes its defaults from here, so ``demo --help`` shows what a run does.
_DEMO_SETTINGS = {
    "n_images": 400,
    "n_per_label": 40,
    "hidden_sizes": [128, 64],
    "max_epochs": 40,
    "train_sizes": [25, 50, 100],
    "shots": [1, 4, 16, "all"],
    "n_draws": 2,
}

_RANDOM_MODEL_NOTICE = (
    "NOTE: the model is a tiny checkpoint with RANDOM weights ({model}), because "
    "the real XraySigLIP model is not available on this machine (see README: "
    "'Getting the real model'). The images are generated, with a planted signal. "
    "The numbers {where} show the workflow, not medicine."
)


def _shown(default):
    """A default as it would be typed on the command line."""
    if isinstance(default, (list, tuple)):
        return " ".join(map(str, default)) if default else "none"
    return str(default)


def _add_option(parser, *flags, help, **kwargs):
    """``parser.add_argument``, with the default at the end of the help.

    An option whose default is None says in its own help what happens then.
    """
    default = kwargs.get("default")
    if default is not None:
        help = f"{help} (default: {_shown(default)})"
    parser.add_argument(*flags, help=help, **kwargs)


def _positive_int(text):
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _shot(text):
    """A value of ``--shots``: a positive integer, or ``all`` (the whole training set)."""
    if text == "all":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a positive integer nor 'all'"
        ) from None


def _operating_point(words):
    """``["youden"]`` -> ``"youden"``; ``["min_sensitivity", "0.9"]`` -> ``["min_sensitivity", 0.9]``.

    Anything else is passed on as typed, for the experiment's check to name.
    """
    if len(words) == 1:
        return words[0]
    try:
        return [words[0], *(float(word) for word in words[1:])]
    except ValueError:
        return list(words)


def _experiment_defaults():
    """The defaults of :class:`~skclipxray.experiment.ExperimentConfig`, by field."""
    from .experiment import ExperimentConfig

    defaults = {}
    for field in dataclasses.fields(ExperimentConfig):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def _add_experiment_options(parser, defaults):
    _add_option(parser, "--n-per-label", type=int, default=defaults["n_per_label"],
                help="positives per pathology in the balanced subset")
    _add_option(parser, "--test-size", type=float, default=defaults["test_size"],
                help="fraction of patients held out")
    _add_option(parser, "--train-sizes", type=int, nargs="+",
                default=list(defaults["train_sizes"]),
                help="also compare the heads at these training-set sizes")
    _add_option(parser, "--shots", type=_shot, nargs="*", default=list(defaults["shots"]),
                help="label-efficiency sweep: retrain every model on balanced draws of "
                "the training patients with this many positives per label, 'all' being "
                "the whole training set; the option alone skips the sweep")
    _add_option(parser, "--n-draws", type=_positive_int, default=defaults["n_draws"],
                help="draws per number of positives in the sweep, each with its own "
                "seed; 'all' is drawn once")
    _add_option(parser, "--operating-point", nargs="+",
                default=list(defaults["operating_point"]),
                help="objective of each model's per-label thresholds, tuned on a "
                "validation split of the training patients: f1, youden, "
                "balanced_accuracy, or min_sensitivity X, min_specificity X, "
                "min_precision X")
    _add_option(parser, "--calibration", default=defaults["calibration"],
                choices=["temperature", "sigmoid", "isotonic"],
                help="calibration map fitted on the same validation split")
    _add_option(parser, "--validation-size", type=float,
                default=defaults["validation_size"],
                help="fraction of the training patients that tune the operating points "
                "and the calibration")
    _add_option(parser, "--n-boot", type=_positive_int, default=defaults["n_boot"],
                help="patient-bootstrap replicates of the test sensitivity and "
                "specificity intervals")
    _add_option(parser, "--hidden-sizes", type=int, nargs="+",
                default=list(defaults["hidden_sizes"]), help="hidden layers of every head")
    _add_option(parser, "--max-epochs", type=int, default=defaults["max_epochs"],
                help="training epochs of every head")
    _add_option(parser, "--device", default=defaults["device"],
                help="auto, cpu, cuda, cuda:N or mps")
    _add_option(parser, "--dtype", default=defaults["dtype"], choices=_DTYPES,
                help="precision of the model")
    _add_option(parser, "--batch-size", type=int, default=defaults["embed_batch_size"],
                help="images per forward pass of the vision tower")
    _add_option(parser, "--cache", help="embedding cache (default: OUT/embeddings.sqlite)")
    _add_option(parser, "--random-state", type=int, default=defaults["random_state"],
                help="seed of the subset, the split, the controls and the heads")


def _config(args, nih_root, model, out_dir, metadata=None):
    from .experiment import ExperimentConfig

    return ExperimentConfig(
        nih_root=str(nih_root), out_dir=str(out_dir), metadata=metadata, model=model if isinstance(model, list) else str(model),
        n_per_label=args.n_per_label, test_size=args.test_size,
        train_sizes=list(args.train_sizes), shots=list(args.shots), n_draws=args.n_draws,
        operating_point=_operating_point(args.operating_point),
        calibration=args.calibration, validation_size=args.validation_size,
        n_boot=args.n_boot, views=getattr(args, "views", "all"),
        follow_up=getattr(args, "follow_up", "all"), cache=args.cache,
        hidden_sizes=tuple(args.hidden_sizes), max_epochs=args.max_epochs,
        device=args.device, dtype=args.dtype, embed_batch_size=args.batch_size,
        random_state=args.random_state,
    )


def _print_results(metrics, out_dir):
    columns = ["roc_auc_macro", "f1_macro", "hamming_loss", "exact_match"]
    print()
    print(metrics[columns].to_string(float_format="{:.3f}".format))
    print(f"\nResults written to {out_dir}/")


def _experiment(args):
    from .experiment import ExperimentConfig, run_experiment

    models = args.model or [ExperimentConfig.model]
    model = models[0] if len(models) == 1 else models
    config = _config(args, args.nih_root, model, args.out, args.metadata)
    _print_results(run_experiment(config), args.out)


def _demo(args):
    from .experiment import run_experiment
    from .testing import demo_model, make_synthetic_nih

    model, is_random = demo_model(args.model)
    out_dir = Path(args.out)
    data_dir = out_dir / "data"
    if is_random:
        print(_RANDOM_MODEL_NOTICE.format(model=model, where="below"), flush=True)
    if not (data_dir / "Data_Entry_2017_v2020.csv").exists():
        make_synthetic_nih(data_dir, n_images=args.n_images, image_size=64,
                           seed=args.random_state)
    config = _config(args, data_dir, model, out_dir)
    metrics = run_experiment(config)
    _print_results(metrics, out_dir)
    if is_random:
        print("\n" + _RANDOM_MODEL_NOTICE.format(model=model, where="above"))


def _read_inputs(inputs, column):
    """Image paths from folders, CSV files (a column of paths) and single files."""
    import pandas as pd

    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(
                str(p) for p in item.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES
            )
        elif item.suffix.lower() == ".csv":
            table = pd.read_csv(item)
            if column not in table:
                raise SystemExit(
                    f"{item} has no column {column!r}; choose one with --column "
                    f"(columns: {', '.join(table.columns)})."
                )
            paths += [str(item.parent / p) for p in table[column]]
        else:
            paths.append(str(item))
    if not paths:
        raise SystemExit(f"No image found in {', '.join(inputs)}.")
    return paths


def _embed(args):
    import numpy as np
    import pandas as pd

    from .embedders import SigLIPImageEmbedder

    paths = _read_inputs(args.inputs, args.column)
    out = Path(args.out)
    cache = args.cache or str(out.with_suffix(out.suffix + ".sqlite"))
    embedder = SigLIPImageEmbedder(
        args.model, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size, cache=cache,
        # int8 pays only once compiled, so --quantize implies --compile.
        compile=args.compile or ("default" if args.quantize else False),
        quantize=args.quantize,
    )
    embeddings = embedder.fit_transform(paths)
    if out.suffix == ".npz":
        np.savez(out, paths=np.asarray(paths), embeddings=embeddings)
    else:
        frame = pd.DataFrame(
            embeddings, index=pd.Index(paths, name="path"),
            columns=embedder.get_feature_names_out(),
        )
        frame.to_csv(out)
    print(f"{len(paths)} images: {embedder.n_embedded_} embedded, "
          f"{embedder.n_cached_} from the cache {cache}; written to {out}")


def _models(args):
    from .models import format_known_checkpoints

    print(format_known_checkpoints(), end="")


def build_parser():
    """The argument parser of the ``skclipxray`` command."""
    experiment_defaults = _experiment_defaults()
    parser = argparse.ArgumentParser(
        prog="skclipxray",
        description="Classify chest X-rays with frozen SigLIP features.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="the whole experiment offline, on generated images",
        description="Run the experiment on a generated NIH-like folder. Without "
        "--model (or SKCLIPXRAY_MODEL) and without XraySigLIP in the local "
        "Hugging Face cache, a tiny random checkpoint is used.",
    )
    _add_option(demo, "--model",
                help="checkpoint id or folder; 'tiny' is the random one (default: "
                "SKCLIPXRAY_MODEL, else XraySigLIP if in the Hugging Face cache, "
                "else 'tiny')")
    _add_option(demo, "--out", default="results/demo", help="results folder")
    _add_option(demo, "--n-images", type=int, default=_DEMO_SETTINGS["n_images"],
                help="images to generate, once per results folder")
    _add_experiment_options(demo, {**experiment_defaults, **_DEMO_SETTINGS})
    demo.set_defaults(func=_demo)

    experiment = commands.add_parser(
        "experiment", help="the method on an NIH ChestX-ray14 download",
        description="Run the method on an NIH ChestX-ray14 download and write a "
        "results folder.",
    )
    _add_option(experiment, "--nih-root", required=True,
                help="folder of the download (images/ or images_0NN/images)")
    _add_option(experiment, "--metadata",
                help="Data_Entry_2017 CSV (default: the one found in the root)")
    _add_option(experiment, "--model", action="extend", nargs="+",
                help="checkpoint id or folder; given more than once (or with several "
                "values), the backbones are compared on the same images, split and "
                f"heads (default: {experiment_defaults['model']})")
    _add_option(experiment, "--out", default="results/experiment", help="results folder")
    _add_option(experiment, "--views", default=experiment_defaults["views"],
                help="all, PA or AP")
    _add_option(experiment, "--follow-up", default=experiment_defaults["follow_up"],
                choices=["all", "first"],
                help="all images, or the first of each patient only")
    _add_experiment_options(experiment, experiment_defaults)
    experiment.set_defaults(func=_experiment)

    embed = commands.add_parser(
        "embed", help="embed images into a file, resumably",
        description="Embed the images of folders, CSV files (a column of paths) or "
        "single files. Embeddings go to an SQLite cache as they are computed, so an "
        "interrupted run resumes where it stopped.",
    )
    embed.add_argument("inputs", nargs="+", help="folders, CSV files or image files")
    _add_option(embed, "--out", required=True, help="output .csv or .npz")
    _add_option(embed, "--column", default="path", help="column of paths in CSV inputs")
    _add_option(embed, "--model", default=DEFAULT_MODEL, help="checkpoint id or folder")
    _add_option(embed, "--cache", help="embedding cache (default: OUT.sqlite)")
    _add_option(embed, "--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    _add_option(embed, "--dtype", default="auto", choices=_DTYPES,
                help="precision of the model")
    _add_option(embed, "--batch-size", type=int, default=16,
                help="images per forward pass of the vision tower")
    _add_option(embed, "--compile", nargs="?", const="default", choices=COMPILE_MODES,
                help="run the vision tower through torch.compile, in this mode if "
                "given, else 'default' (default: not compiled)")
    _add_option(embed, "--quantize", choices=QUANTIZE_MODES,
                help="int8 linear layers; needs torchao and implies --compile "
                "(default: not quantized)")
    embed.set_defaults(func=_embed)

    models = commands.add_parser(
        "models", help="the known chest X-ray checkpoints and their licences",
        description="Print the table of known chest X-ray checkpoints: architecture, "
        "image size, embedding size, text tower and licence. Any checkpoint of a "
        "supported architecture loads, listed or not.",
    )
    models.set_defaults(func=_models)
    return parser


def main(argv=None):
    """Entry point of the ``skclipxray`` command.

    The library's documented errors (a checkpoint that cannot be found, an
    unreadable image, an unusable cache, bad values) are printed as one line
    naming the command, without a traceback, and exit with status 1; an
    interrupt exits with status 130.
    """
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (OSError, ValueError) as exc:  # every documented error is one of them
        print(f"skclipxray {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"skclipxray {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
