"""Checkpoint loading: sharing, devices, dtypes, offline and unsafe checkpoints."""

import logging
import re
import subprocess
import sys

import pytest
import torch

from skclipxray import DEFAULT_MODEL, ModelNotAvailableError, load_backbone
from skclipxray._backbone import resolve_device, resolve_dtype


def test_one_copy_per_checkpoint_device_and_dtype(tiny_model_dir):
    first = load_backbone(tiny_model_dir, device="cpu", dtype="float32")
    # A relative spelling of the same folder is the same checkpoint.
    again = load_backbone(str(tiny_model_dir) + "/", device="cpu", dtype="float32")
    assert again is first
    half = load_backbone(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert half is not first
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert not any(p.requires_grad for p in first.model.parameters())
    assert not first.model.training


def test_backbone_reads_size_from_config(tiny_model_dir):
    backbone = load_backbone(tiny_model_dir, device="cpu")
    assert backbone.image_size == 32
    assert backbone.embedding_dim == 32
    assert backbone.image_processor.size == {"height": 32, "width": 32}


def test_offline_hub_id_names_model_and_remedy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_backbone(DEFAULT_MODEL, device="cpu")
    message = str(info.value)
    assert DEFAULT_MODEL in message
    assert "could not be downloaded" in message
    assert "local-dir" in message and "model=DIR" in message


def test_pickle_only_checkpoint_is_refused(tiny_model_dir, tmp_path):
    from transformers import SiglipConfig, SiglipModel

    config = SiglipConfig.from_pretrained(tiny_model_dir)
    config.save_pretrained(tmp_path)
    torch.save(SiglipModel(config).state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelNotAvailableError, match="only as a pickle"):
        load_backbone(tmp_path, device="cpu")


def test_vision_only_checkpoint_is_refused(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, image_size=32, patch_size=8,
    )
    SiglipVisionModel(config).save_pretrained(tmp_path)
    with pytest.raises(ModelNotAvailableError, match="siglip_vision_model"):
        load_backbone(tmp_path, device="cpu")


def test_folder_without_weights(tmp_path):
    with pytest.raises(ModelNotAvailableError, match=re.escape(str(tmp_path))):
        load_backbone(tmp_path, device="cpu")


@pytest.mark.parametrize(
    "device, message",
    [
        ("tpu", "not a device name|not supported"),
        ("cuda:7", "CUDA is not available|only"),
        ("banana", "not a device name"),
    ],
)
def test_unknown_or_unavailable_device(device, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(device)


def test_auto_device_prefers_accelerators_and_dtype_follows():
    expected = (
        "cuda" if torch.cuda.is_available()
        else "mps" if torch.backends.mps.is_available()
        else "cpu"
    )
    assert resolve_device("auto").type == expected
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype='float64'"):
        resolve_dtype("float64", cpu)


def test_loading_prints_no_warning_about_siglip_default_token_ids(tiny_model_dir):
    # transformers warns once per process, so a fresh process is needed.
    code = (
        "import sys; from skclipxray import load_backbone; "
        "load_backbone(sys.argv[1], device='cpu').model.config.to_json_string()"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir)],
                          capture_output=True, text=True, check=True)
    assert "within the vocabulary" not in done.stderr


def test_token_ids_filter_keeps_other_token_id_warnings():
    from skclipxray._backbone import _TOKEN_IDS_FILTER

    def record(message):
        return logging.LogRecord("transformers", logging.WARNING, "", 0, message, (), None)

    template = ("Model config: {} must be `None` or an integer within the vocabulary "
                "(between 0 and 31999), got {}. This may result in unexpected behavior.")
    assert not _TOKEN_IDS_FILTER.filter(record(template.format("bos_token_id", 49406)))
    assert not _TOKEN_IDS_FILTER.filter(record(template.format("eos_token_id", 49407)))
    assert _TOKEN_IDS_FILTER.filter(record(template.format("pad_token_id", 49407)))
    assert _TOKEN_IDS_FILTER.filter(record(template.format("eos_token_id", 40000)))
