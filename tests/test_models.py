"""The table of known checkpoints: its content, its text form, its imports."""

import dataclasses
import subprocess
import sys

import pytest

from skclipxray.models import (
    ARCHITECTURES,
    KNOWN_CHECKPOINTS,
    KnownCheckpoint,
    format_known_checkpoints,
    known_checkpoint,
)


def test_ids_are_unique():
    ids = [c.id for c in KNOWN_CHECKPOINTS]
    assert len(ids) == len(set(ids))


def test_the_default_model_is_listed():
    # The id is copied here, not imported, so that a rename on either side
    # shows up as a failure.
    entry = known_checkpoint(
        "StanfordAIMI/XraySigLIP__vit-b-16-siglip-512__webli")
    assert entry is not None
    assert entry.architecture == "SiglipModel"
    assert entry.licence == "CC-BY-NC-4.0"


@pytest.mark.parametrize("checkpoint", KNOWN_CHECKPOINTS, ids=lambda c: c.id)
def test_every_field_is_well_formed(checkpoint):
    assert checkpoint.architecture in ARCHITECTURES
    assert checkpoint.id.count("/") == 1 and " " not in checkpoint.id
    assert isinstance(checkpoint.image_size, int) and checkpoint.image_size > 0
    assert (isinstance(checkpoint.embedding_size, int)
            and checkpoint.embedding_size > 0)
    assert isinstance(checkpoint.text_tower, bool)
    for field in ("licence", "licence_terms", "source"):
        assert getattr(checkpoint, field).strip(), field


def test_architectures_are_the_four_supported():
    assert set(ARCHITECTURES) == {
        "CLIPModel", "SiglipModel", "Siglip2Model", "Dinov2Model"}
    # Every architecture has at least one example in the table.
    assert {c.architecture for c in KNOWN_CHECKPOINTS} == set(ARCHITECTURES)


def test_only_dinov2_lacks_a_text_tower():
    for c in KNOWN_CHECKPOINTS:
        assert c.text_tower == (c.architecture != "Dinov2Model"), c.id


def test_entries_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        KNOWN_CHECKPOINTS[0].image_size = 1


def test_one_licence_has_one_set_of_terms():
    terms = {}
    for c in KNOWN_CHECKPOINTS:
        assert terms.setdefault(c.licence, c.licence_terms) == c.licence_terms


def test_known_checkpoint_finds_each_entry():
    for c in KNOWN_CHECKPOINTS:
        assert known_checkpoint(c.id) is c


@pytest.mark.parametrize("model_id", [
    "not-a-real/checkpoint",
    "stanfordaimi/xraysiglip__vit-b-16-siglip-512__webli",  # ids are exact
    "",
])
def test_known_checkpoint_returns_none_for_unknown_ids(model_id):
    assert known_checkpoint(model_id) is None


def test_table_has_one_row_per_checkpoint():
    lines = format_known_checkpoints().splitlines()
    for c in KNOWN_CHECKPOINTS:
        rows = [line for line in lines if line.split()[:1] == [c.id]]
        assert len(rows) == 1, c.id
        cells = rows[0].split(None, 5)
        assert cells[:5] == [c.id, c.architecture, str(c.image_size),
                             str(c.embedding_size),
                             "yes" if c.text_tower else "no"]
        assert cells[5] == c.licence


def test_table_columns_are_fixed_width():
    lines = format_known_checkpoints().splitlines()
    header, rule = lines[0], lines[1]
    body = lines[2:2 + len(KNOWN_CHECKPOINTS)]
    # Each column starts where the rule's dashes start, on every row.
    starts = [i for i, ch in enumerate(rule) if ch == "-"
              and (i == 0 or rule[i - 1] == " ")]
    assert len(starts) == 6
    for line in [header, *body]:
        for start in starts[1:]:
            assert line[start - 2:start] == "  ", line


def test_table_lists_each_licence_once_with_its_terms():
    text = format_known_checkpoints()
    for c in KNOWN_CHECKPOINTS:
        assert text.count(f"{c.licence}: {c.licence_terms}.") == 1


def test_table_says_unlisted_checkpoints_load():
    text = format_known_checkpoints()
    assert "listed or not" in text
    for architecture in ARCHITECTURES:
        assert architecture in text


def test_known_checkpoint_is_a_dataclass_with_the_documented_fields():
    names = [f.name for f in dataclasses.fields(KnownCheckpoint)]
    assert names == ["id", "architecture", "image_size", "embedding_size",
                     "text_tower", "licence", "licence_terms", "source",
                     "notes"]


def test_import_pulls_in_nothing_heavy():
    heavy = ("torch", "transformers", "pandas", "sklearn")
    code = ("import sys, skclipxray.models; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
