"""The ``skclipxray`` command: ``demo``, ``experiment`` and ``embed``."""

import argparse
import sys
from pathlib import Path

from ._backbone import COMPILE_MODES, DEFAULT_MODEL
from ._quantize import QUANTIZE_MODES

__all__ = ["main"]

# Files a folder given to ``skclipxray embed`` is searched for.
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}

_RANDOM_MODEL_NOTICE = (
    "NOTE: the model is a tiny checkpoint with RANDOM weights ({model}), because "
    "the real XraySigLIP model is not available on this machine (see README: "
    "'Getting the real model'). The images are generated, with a planted signal. "
    "The numbers below show the workflow, not medicine."
)


def _add_experiment_options(parser):
    parser.add_argument("--n-per-label", type=int, default=200,
                        help="positives per pathology in the balanced subset (default: 200)")
    parser.add_argument("--test-size", type=float, default=0.25,
                        help="fraction of patients held out (default: 0.25)")
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[],
                        help="also compare the heads at these training-set sizes")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[512, 256],
                        help="hidden layers of every head (default: 512 256)")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--dtype", default="auto",
                        choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=16,
                        help="images per forward pass of the vision tower")
    parser.add_argument("--cache", help="embedding cache (default: OUT/embeddings.sqlite)")
    parser.add_argument("--random-state", type=int, default=0)


def _config(args, nih_root, model, out_dir, metadata=None):
    from .experiment import ExperimentConfig

    return ExperimentConfig(
        nih_root=str(nih_root), out_dir=str(out_dir), metadata=metadata, model=str(model),
        n_per_label=args.n_per_label, test_size=args.test_size,
        train_sizes=list(args.train_sizes), views=getattr(args, "views", "all"),
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
    from .experiment import run_experiment

    config = _config(args, args.nih_root, args.model, args.out, args.metadata)
    _print_results(run_experiment(config), args.out)


def _demo(args):
    from .experiment import run_experiment
    from .testing import demo_model, make_synthetic_nih

    model, is_random = demo_model(args.model)
    out_dir = Path(args.out)
    data_dir = out_dir / "data"
    if is_random:
        print(_RANDOM_MODEL_NOTICE.format(model=model), flush=True)
    if not (data_dir / "Data_Entry_2017_v2020.csv").exists():
        make_synthetic_nih(data_dir, n_images=args.n_images, image_size=64,
                           seed=args.random_state)
    config = _config(args, data_dir, model, out_dir)
    metrics = run_experiment(config)
    _print_results(metrics, out_dir)
    if is_random:
        print("\n" + _RANDOM_MODEL_NOTICE.format(model=model))


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


def build_parser():
    """The argument parser of the ``skclipxray`` command."""
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
    demo.add_argument("--model", help="checkpoint id or folder ('tiny': the random one)")
    demo.add_argument("--out", default="results/demo", help="results folder")
    demo.add_argument("--n-images", type=int, default=400)
    _add_experiment_options(demo)
    demo.set_defaults(func=_demo, n_per_label=40, max_epochs=40,
                      hidden_sizes=[128, 64], train_sizes=[50, 100, 200])

    experiment = commands.add_parser(
        "experiment", help="the method on an NIH ChestX-ray14 download",
    )
    experiment.add_argument("--nih-root", required=True,
                            help="folder of the download (images/ or images_0NN/images)")
    experiment.add_argument("--metadata", help="Data_Entry_2017 CSV (default: found in the root)")
    experiment.add_argument("--model", default=DEFAULT_MODEL)
    experiment.add_argument("--out", default="results/experiment")
    experiment.add_argument("--views", default="all", help="all, PA or AP")
    experiment.add_argument("--follow-up", default="all", choices=["all", "first"])
    _add_experiment_options(experiment)
    experiment.set_defaults(func=_experiment)

    embed = commands.add_parser(
        "embed", help="embed images into a file, resumably",
        description="Embed the images of folders, CSV files (a column of paths) or "
        "single files. Embeddings go to an SQLite cache as they are computed, so an "
        "interrupted run resumes where it stopped.",
    )
    embed.add_argument("inputs", nargs="+", help="folders, CSV files or image files")
    embed.add_argument("--out", required=True, help="output .csv or .npz")
    embed.add_argument("--column", default="path", help="column of paths in CSV inputs")
    embed.add_argument("--model", default=DEFAULT_MODEL)
    embed.add_argument("--cache", help="embedding cache (default: OUT.sqlite)")
    embed.add_argument("--device", default="auto")
    embed.add_argument("--dtype", default="auto",
                       choices=["auto", "float32", "bfloat16", "float16"])
    embed.add_argument("--batch-size", type=int, default=16)
    embed.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES,
                       help="run the vision tower through torch.compile (in this mode)")
    embed.add_argument("--quantize", choices=QUANTIZE_MODES,
                       help="int8 linear layers (needs torchao; implies --compile)")
    embed.set_defaults(func=_embed)
    return parser


def main(argv=None):
    """Entry point of the ``skclipxray`` command."""
    from transformers.utils import logging as transformers_logging

    args = build_parser().parse_args(argv)
    # skclipxray shows its own progress bars; transformers' per-file ones are noise here.
    transformers_logging.disable_progress_bar()
    args.func(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
