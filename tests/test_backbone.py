"""Checkpoint loading: sharing, devices, dtypes, offline and unsafe checkpoints."""

import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from skclipxray import DEFAULT_MODEL, ModelNotAvailableError, load_backbone
from skclipxray._device import resolve_device, resolve_dtype


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
    assert backbone.architecture.class_name == "SiglipModel"
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


REAL_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (True, False, torch.bfloat16),   # AMD EPYC Zen 4, Intel Cooper Lake
    (False, True, torch.bfloat16),   # Intel Sapphire Rapids and later
    (False, False, torch.float32),   # no bfloat16 units: emulated, several times slower
])
def test_auto_dtype_on_the_cpu_follows_its_bfloat16_units(monkeypatch, avx512_bf16, amx, expected):
    import skclipxray._device

    monkeypatch.setattr(skclipxray._device, "_BFLOAT16_PROBES", REAL_PROBES)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == expected
    assert resolve_dtype("float32", cpu) == torch.float32  # always there for exact work


def test_a_torch_without_the_probes_gets_float32(monkeypatch):
    import skclipxray._device

    monkeypatch.setattr(skclipxray._device, "_BFLOAT16_PROBES", ("_no_such_probe",))
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_the_probe_says_what_the_cpu_flags_say(monkeypatch):
    import skclipxray._device

    flags = set()
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    monkeypatch.setattr(skclipxray._device, "_BFLOAT16_PROBES", REAL_PROBES)
    native = bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
    assert skclipxray._device.cpu_has_native_bfloat16() == native


def test_an_auto_checkpoint_on_a_bfloat16_cpu_is_loaded_and_cached_as_bfloat16(
    tiny_model_dir, monkeypatch, tmp_path
):
    import skclipxray._device
    from skclipxray import SigLIPImageEmbedder

    image = [np.zeros((40, 40), dtype=np.uint8)]
    cached = dict(device="cpu", progress=False, cache=tmp_path / "cache.sqlite")
    float32 = SigLIPImageEmbedder(tiny_model_dir, **cached)
    float32.fit_transform(image)
    monkeypatch.setattr(skclipxray._device, "cpu_has_native_bfloat16", lambda: True)
    auto = SigLIPImageEmbedder(tiny_model_dir, **cached)
    X = auto.fit_transform(image)
    assert auto.n_embedded_ == 1  # not served float32's vector
    assert load_backbone(tiny_model_dir, device="cpu", dtype="auto").dtype == torch.bfloat16
    assert auto.cache_namespace_ != float32.cache_namespace_
    assert X.dtype == np.float32


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


@pytest.mark.parametrize(
    "name, is_path",
    [
        (DEFAULT_MODEL, False),
        ("google/siglip-base-patch16-224", False),
        ("./no_such_model", True),
        ("../models/xraysiglip", True),
        ("/data/models/xraysiglip", True),
        ("~/xraysiglip", True),
        ("models/xraysiglip/", True),
        ("models/xraysiglip/v2", True),
    ],
)
def test_names_that_look_like_paths(name, is_path):
    from skclipxray._backbone import _looks_like_path

    assert _looks_like_path(name) is is_path


def test_mistyped_folder_says_folder_not_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotAvailableError) as info:
        load_backbone("./no_such_model", device="cpu")
    message = str(info.value)
    assert message.startswith("The checkpoint folder './no_such_model' was not found")
    assert str(tmp_path / "no_such_model") in message
    assert "hf download" not in message


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on: connections are refused at once."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_hub_probe_tells_a_dead_endpoint_from_a_live_one(closed_port, monkeypatch):
    import http.server
    import threading

    from huggingface_hub import constants

    from skclipxray._backbone import _hub_reachable

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    # The suite runs with HF_HUB_OFFLINE=1, under which huggingface_hub's
    # session refuses every request.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not _hub_reachable(f"http://127.0.0.1:{closed_port}")
    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:  # it answers 501 to HEAD: an answer, so the hub is reachable
        assert _hub_reachable(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_hub_fails_fast_without_hf_hub_offline(closed_port, tmp_path):
    # HF_HUB_OFFLINE unset and a hub that refuses connections: huggingface_hub
    # alone retries for about 20 s before failing.
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port}", HF_HOME=str(tmp_path))
    code = (
        "import sys, time; from skclipxray import load_backbone; start = time.perf_counter()\n"
        "try: load_backbone(sys.argv[1], device='cpu')\n"
        "except Exception as exc: print(type(exc).__name__, exc)\n"
        "print(f'{time.perf_counter() - start:.2f}')"
    )
    done = subprocess.run([sys.executable, "-c", code, DEFAULT_MODEL], env=env,
                          capture_output=True, text=True, check=True, timeout=120)
    *message, seconds = done.stdout.strip().splitlines()
    assert message[0].startswith("ModelNotAvailableError Could not load the checkpoint")
    assert "set HF_HUB_OFFLINE=1" in message[0]
    assert float(seconds) < 8  # the probe waits 3 s at most; one retry waits 1 s
    assert "Retrying" not in done.stderr


def test_a_checkpoint_missing_weights_is_refused(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "incomplete"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    dropped = next(name for name in sorted(weights) if name.startswith("vision_model."))
    del weights[dropped]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelNotAvailableError, match=r"1 missing \(vision_model\."):
        load_backbone(folder, device="cpu")


_QUIET_LOAD = """
import logging, sys
from transformers.utils import logging as hf_logging
from skclipxray import PromptEnsembleEmbedder, SigLIPImageEmbedder
hf_logging.set_verbosity_info()
level = logging.getLogger("transformers").level
SigLIPImageEmbedder(sys.argv[1], device="cpu", progress=False).fit_transform(
    [__import__("numpy").zeros((8, 8), "uint8")])
PromptEnsembleEmbedder(sys.argv[1], device="cpu").fit_transform(["Mass"])
assert logging.getLogger("transformers").level == level, "verbosity not restored"
hf_logging.get_logger("transformers.modeling_utils").info("the caller's own message")
for _ in hf_logging.tqdm(range(2), desc="the caller's own bar"):
    pass
"""


def test_the_library_loads_quietly_and_leaves_transformers_logging_as_it_was(tiny_model_dir):
    done = subprocess.run([sys.executable, "-c", _QUIET_LOAD, str(tiny_model_dir)],
                          capture_output=True, text=True, check=True, timeout=300)
    assert "Loading weights" not in done.stderr
    assert "within the vocabulary" not in done.stderr
    assert "the caller's own message" in done.stderr
    assert "the caller's own bar" in done.stderr


def test_one_clear_forgets_each_checkpoint_and_what_was_derived_from_it(tiny_model_dir):
    from skclipxray import PromptEnsembleEmbedder
    from skclipxray._backbone import checkpoint_info, clear_backbone_cache
    from skclipxray._keys import cache_namespace
    from skclipxray._preprocessing import preprocessor

    backbone = load_backbone(tiny_model_dir, device="cpu")
    info = checkpoint_info(tiny_model_dir, device="cpu")
    PromptEnsembleEmbedder(tiny_model_dir, device="cpu").fit(["Mass"])
    namespace = cache_namespace(info)
    preprocessor(info)
    assert "text_embeddings" in backbone.derived
    assert set(info.derived) == {("cache_namespace", None, "cpu"), ("preprocessor", "cpu")}

    clear_backbone_cache()
    again, info_again = load_backbone(tiny_model_dir, device="cpu"), checkpoint_info(
        tiny_model_dir, device="cpu")
    assert again is not backbone and again.derived == {}
    assert info_again is not info and info_again.derived == {}
    assert cache_namespace(info_again) == namespace  # recomputed, the same
