"""Known chest X-ray checkpoints: a table for people, not a gate for code.

This module holds one thing, :data:`KNOWN_CHECKPOINTS`, a short table of
Hugging Face checkpoints that suit chest X-rays, with what a user needs to
choose between them: the ``transformers`` class that loads each one, the image
size it expects, the length of its embeddings, whether it has a text tower
(zero-shot and prompt-based classifiers need one), and its licence.

The table is informational. Any checkpoint of a supported architecture
(``CLIPModel``, ``SiglipModel``, ``Siglip2Model`` or ``Dinov2Model``) loads,
listed here or not, and nothing in the library looks a checkpoint up here
before loading it. The licence columns are summaries to help choose: they are
not legal advice, terms change, and each licence must be read in full on the
checkpoint's model card before use.

The module imports only the standard library, so ``skclipxray models`` prints
the table without paying for torch, transformers, pandas or scikit-learn.
"""

from dataclasses import dataclass

from ._architectures import ARCHITECTURES as _FAMILIES

__all__ = [
    "ARCHITECTURES",
    "KNOWN_CHECKPOINTS",
    "KnownCheckpoint",
    "format_known_checkpoints",
    "known_checkpoint",
]

#: The ``transformers`` model classes that skclipxray loads.
ARCHITECTURES = tuple(family.class_name for family in _FAMILIES.values())


@dataclass(frozen=True)
class KnownCheckpoint:
    """One row of the table of known checkpoints.

    Parameters
    ----------
    id : str
        The Hugging Face model id, as passed to ``from_pretrained``.
    architecture : str
        The ``transformers`` class that loads the checkpoint, one of
        :data:`ARCHITECTURES`.
    image_size : int
        Side of the square image, in pixels, that the checkpoint's image
        processor produces by default.
    embedding_size : int
        Length of the image embedding: the projected embedding for CLIP, the
        pooled output for SigLIP and SigLIP 2, the CLS token for DINOv2.
    text_tower : bool
        Whether the checkpoint has a text encoder, which zero-shot and other
        prompt-based classifiers need. Image-only checkpoints serve linear
        probes and other heads trained on image embeddings.
    licence : str
        SPDX identifier of the licence, or its name where it has none.
    licence_terms : str
        One sentence on what the licence allows. A summary, not the licence.
    source : str
        The paper or model card that describes the checkpoint.
    notes : str
        Anything else worth knowing before choosing it, including any field
        taken from a secondary source.
    """

    id: str
    architecture: str
    image_size: int
    embedding_size: int
    text_tower: bool
    licence: str
    licence_terms: str
    source: str
    notes: str = ""


_CHEXAGENT = ("CheXagent: Towards a Foundation Model for Chest X-Ray "
              "Interpretation (Chen et al., arXiv:2401.12208)")
_CC_BY_NC = ("non-commercial use only (research included), with attribution; "
             "the CheXagent authors add: research only, not for clinical use")

#: Checkpoints known to suit chest X-rays, in the order they are printed.
KNOWN_CHECKPOINTS = (
    KnownCheckpoint(
        id="StanfordAIMI/XraySigLIP__vit-b-16-siglip-512__webli",
        architecture="SiglipModel",
        image_size=512,
        embedding_size=768,
        text_tower=True,
        licence="CC-BY-NC-4.0",
        licence_terms=_CC_BY_NC,
        source=_CHEXAGENT,
        notes=("The library's default. SigLIP ViT-B/16 (WebLI, 512 px) "
               "adapted to chest X-rays with the SigLIP loss."),
    ),
    KnownCheckpoint(
        id="StanfordAIMI/XrayCLIP__vit-b-16-siglip-512__webli",
        architecture="SiglipModel",
        image_size=512,
        embedding_size=768,
        text_tower=True,
        licence="CC-BY-NC-4.0",
        licence_terms=_CC_BY_NC,
        source=_CHEXAGENT,
        notes=("The same SigLIP ViT-B/16 backbone adapted with the CLIP "
               "(softmax) loss; it still loads as SiglipModel."),
    ),
    KnownCheckpoint(
        id="StanfordAIMI/XrayCLIP__vit-b-16__laion2b-s34b-b88k",
        architecture="CLIPModel",
        image_size=512,
        embedding_size=512,
        text_tower=True,
        licence="CC-BY-NC-4.0",
        licence_terms=_CC_BY_NC,
        source=_CHEXAGENT,
        notes=("CLIP ViT-B/16 (LAION-2B) adapted to chest X-rays. Image size "
               "512 px is from a secondary source, not yet checked against "
               "the checkpoint's preprocessor_config.json."),
    ),
    KnownCheckpoint(
        id="google/medsiglip-448",
        architecture="SiglipModel",
        image_size=448,
        embedding_size=1152,
        text_tower=True,
        licence="HAI-DEF terms of use",
        licence_terms=("Google's Health AI Developer Foundations terms, not "
                       "an open licence: accepted on Hugging Face before "
                       "download (gated), they govern clinical use (diagnosis "
                       "or treatment of patients) and add a prohibited-use "
                       "policy; read them before any commercial use"),
        source="MedSigLIP model card (Google Health AI Developer Foundations)",
        notes=("SigLIP So400m-size encoder trained on medical images "
               "including chest X-rays. Embedding size 1152 is from "
               "third-party copies of its config.json (the original is "
               "gated)."),
    ),
    KnownCheckpoint(
        id="microsoft/rad-dino",
        architecture="Dinov2Model",
        image_size=518,
        embedding_size=768,
        text_tower=False,
        licence="MIT",
        licence_terms=("the licence allows any use, commercial included, with "
                       "the notice kept; the model card shares the model for "
                       "research only, not for clinical practice"),
        source=("RAD-DINO: Exploring Scalable Medical Image Encoders Beyond "
                "Text Supervision (Perez-Garcia et al., arXiv:2401.10815)"),
        notes=("Image only (DINOv2 ViT-B/14): linear probes and other trained "
               "heads, no zero-shot. Licensed MSRLA for part of 2024-25, MIT "
               "in its current model card."),
    ),
    KnownCheckpoint(
        id="google/siglip2-base-patch16-naflex",
        architecture="Siglip2Model",
        image_size=256,
        embedding_size=768,
        text_tower=True,
        licence="Apache-2.0",
        licence_terms=("any use, commercial included, with the licence and "
                       "notices kept; includes a patent grant"),
        source=("SigLIP 2: Multilingual Vision-Language Encoders with Improved "
                "Semantic Understanding, Localization, and Dense Features "
                "(Tschannen et al., arXiv:2502.14786)"),
        notes=("General-domain baseline, not trained for X-rays. NaFlex keeps "
               "the aspect ratio: 256 is the square image that fills the "
               "processor's default 256 patches of 16 px."),
    ),
)


def known_checkpoint(model_id):
    """Return the table's entry for a model id, or None if it is not listed.

    A checkpoint missing from the table may still load: the table only
    informs (see the module docstring).

    Parameters
    ----------
    model_id : str
        A Hugging Face model id, compared exactly (ids are case-sensitive on
        the hub).

    Returns
    -------
    KnownCheckpoint or None
        The entry whose ``id`` equals ``model_id``, else None.
    """
    for checkpoint in KNOWN_CHECKPOINTS:
        if checkpoint.id == model_id:
            return checkpoint
    return None


def format_known_checkpoints():
    """Render :data:`KNOWN_CHECKPOINTS` as a plain-text table.

    One row per checkpoint with the columns needed at a glance (id,
    architecture, image size, embedding size, text tower, licence), then one
    line per distinct licence with its terms, then a reminder that the table
    is not exhaustive and that licences must be read in full.

    Returns
    -------
    str
        The table, fixed-width columns, lines joined by newlines, ending with
        a newline.
    """
    header = ("id", "architecture", "px", "dim", "text", "licence")
    rows = [(c.id, c.architecture, str(c.image_size), str(c.embedding_size),
             "yes" if c.text_tower else "no", c.licence)
            for c in KNOWN_CHECKPOINTS]
    widths = [max(len(row[i]) for row in [header, *rows])
              for i in range(len(header))]
    right = {2, 3}  # numbers align right

    def line(cells):
        return "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))
                         ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    out += ["", "Licences (summaries; read each in full on the model card):"]
    terms = {}
    for c in KNOWN_CHECKPOINTS:
        terms.setdefault(c.licence, c.licence_terms)
    out += [f"  {licence}: {text}." for licence, text in terms.items()]
    out += ["", "Any checkpoint of a supported architecture ("
            + ", ".join(ARCHITECTURES) + ") loads, listed or not."]
    return "\n".join(out) + "\n"
