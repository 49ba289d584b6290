"""The torch modules: layers as the method describes them, prompts as a fixed buffer."""

import numpy as np
import pytest
import torch
from torch import nn

from skclipxray.nn import (
    BaselineMLP,
    ConcatFusionMLP,
    Dropout,
    GaussianNoise,
    WeightedSumMLP,
)


# Small networks: extra torch threads only add synchronisation cost.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


_LAYER_KINDS = (nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout)


def _block_types(sequential):
    """The kind of each layer (the library's Dropout is a torch Dropout)."""
    return [next(k for k in _LAYER_KINDS if isinstance(layer, k)) for layer in sequential]


def _linear_shapes(sequential):
    return [(m.in_features, m.out_features) for m in sequential if isinstance(m, nn.Linear)]


@pytest.fixture
def prompts():
    return torch.randn(3, 6, generator=torch.Generator().manual_seed(0))


def test_baseline_layers():
    module = BaselineMLP(20, 4, hidden_sizes=(16, 8), dropout=0.25, noise_std=0.05)
    block = [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    assert _block_types(module.body) == block * 2
    assert _linear_shapes(module.body) == [(20, 16), (16, 8)]
    assert [m.num_features for m in module.body if isinstance(m, nn.BatchNorm1d)] == [16, 8]
    assert all(m.p == 0.25 for m in module.body if isinstance(m, nn.Dropout))
    assert (module.output.in_features, module.output.out_features) == (8, 4)
    assert module.noise.std == 0.05
    assert module.eval()(torch.randn(5, 20)).shape == (5, 4)


def test_concat_fusion_layers(prompts):
    module = ConcatFusionMLP(
        20, prompts, 3, hidden_sizes=(16, 8), prompt_hidden_sizes=(12,),
        fusion_hidden_sizes=(10,), dropout=0.1,
    )
    branch_block = [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout]
    assert _block_types(module.image_branch) == branch_block * 2
    assert _linear_shapes(module.image_branch) == [(20, 16), (16, 8)]
    assert _block_types(module.prompt_branch) == branch_block
    # The prompt branch reads the flattened mega-vector: 3 labels x 6 dims.
    assert _linear_shapes(module.prompt_branch) == [(18, 12)]
    # The classifier reads the concatenation of both branch outputs.
    assert _linear_shapes(module.classifier) == [(8 + 12, 10)]
    assert _block_types(module.classifier) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    assert (module.output.in_features, module.output.out_features) == (10, 3)


def test_concat_fusion_prompt_branch_defaults_to_image_sizes(prompts):
    module = ConcatFusionMLP(20, prompts, 3, hidden_sizes=(16, 8), fusion_hidden_sizes=())
    assert _linear_shapes(module.prompt_branch) == [(18, 16), (16, 8)]
    assert len(module.classifier) == 0
    assert module.output.in_features == 16


def test_concat_fusion_forward_matches_its_parts(prompts):
    module = ConcatFusionMLP(20, prompts, 3, hidden_sizes=(16,), fusion_hidden_sizes=(8,))
    module.eval()
    x = torch.randn(5, 20)
    prompt_rows = prompts.reshape(1, -1).expand(5, -1)
    joint = torch.cat([module.image_branch(x), module.prompt_branch(prompt_rows)], dim=1)
    expected = module.output(module.classifier(joint))
    torch.testing.assert_close(module(x), expected)


def test_weighted_sum_layers_and_formula(prompts):
    module = WeightedSumMLP(20, prompts, 3, hidden_sizes=(16, 8), dropout=0.1)
    assert _block_types(module.prompt_projection) == [nn.Linear, nn.ReLU]
    assert _linear_shapes(module.prompt_projection) == [(18, 20)]
    assert isinstance(module.w_img, nn.Parameter) and module.w_img.shape == (20,)
    assert isinstance(module.w_prompt, nn.Parameter) and module.w_prompt.shape == (20,)
    assert _block_types(module.body) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout] * 2
    assert _linear_shapes(module.body) == [(20, 16), (16, 8)]

    with torch.no_grad():
        module.w_img.uniform_(-1, 1)
        module.w_prompt.uniform_(-1, 1)
    module.eval()
    x = torch.randn(5, 20)
    linear = module.prompt_projection[0]
    projected = torch.relu(prompts.reshape(-1) @ linear.weight.T + linear.bias)
    combined = module.w_img * x + module.w_prompt * projected
    torch.testing.assert_close(module(x), module.output(module.body(combined)))


@pytest.mark.parametrize("make", [
    lambda p: ConcatFusionMLP(20, p, 3, hidden_sizes=(8,), fusion_hidden_sizes=(4,)),
    lambda p: WeightedSumMLP(20, p, 3, hidden_sizes=(8,)),
], ids=["concat", "weighted_sum"])
def test_prompts_are_a_fixed_buffer(make, prompts):
    source = prompts.numpy().copy()
    module = make(source)
    source[:] = 0  # the module keeps its own copy
    torch.testing.assert_close(module.prompt_vector, prompts.reshape(-1))
    assert "prompt_vector" in module.state_dict()
    assert "prompt_vector" not in dict(module.named_parameters())
    assert not module.prompt_vector.requires_grad

    module.train()
    module(torch.randn(6, 20)).sum().backward()
    assert module.prompt_vector.grad is None

    # Buffers follow the module's device and dtype (the "meta" device stands
    # in for a GPU here).
    assert module.to(torch.float64).prompt_vector.dtype == torch.float64
    assert module.to("meta").prompt_vector.device.type == "meta"


def test_state_dict_round_trip_restores_prompts(prompts):
    module = WeightedSumMLP(20, prompts, 3, hidden_sizes=(8,))
    other = WeightedSumMLP(20, torch.zeros(3, 6), 3, hidden_sizes=(8,))
    other.load_state_dict(module.state_dict())
    torch.testing.assert_close(other.prompt_vector, prompts.reshape(-1))
    x = torch.randn(4, 20)
    torch.testing.assert_close(other.eval()(x), module.eval()(x))


def test_gaussian_noise_is_train_only():
    noise = GaussianNoise(std=0.5)
    x = torch.zeros(20_000, 4)
    torch.manual_seed(0)
    noisy = noise.train()(x)
    assert noisy.std().item() == pytest.approx(0.5, rel=0.02)
    assert noisy.mean().item() == pytest.approx(0.0, abs=0.02)
    assert torch.equal(noise.eval()(x), x)
    assert torch.equal(GaussianNoise(0.0).train()(x), x)


def test_dropout_matches_torch_dropout_in_distribution():
    dropout = Dropout(p=0.3)
    x = torch.full((200_000,), 2.0, requires_grad=True)
    torch.manual_seed(0)
    out = dropout.train()(x)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.005)
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 2.0 / 0.7))
    out.sum().backward()
    # The gradient is the same mask, scaled, as torch's dropout gives.
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    assert torch.equal(dropout.eval()(x), x)
    assert torch.equal(Dropout(p=0.0).train()(x), x)
    assert (Dropout(p=1.0).train()(x) == 0).all()


def test_noise_reaches_the_image_features_only_in_training():
    module = BaselineMLP(10, 2, hidden_sizes=(4,), dropout=0.0, noise_std=1.0)
    x = torch.randn(8, 10)
    module.train()
    torch.manual_seed(0)
    first = module(x)
    torch.manual_seed(1)
    assert not torch.equal(first, module(x))
    module.eval()
    assert torch.equal(module(x), module(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="std=-1"):
        GaussianNoise(-1)
    with pytest.raises(ValueError, match="hidden_sizes=.*positive"):
        BaselineMLP(10, 2, hidden_sizes=(8, 0))
    with pytest.raises(ValueError, match=r"\(n_labels, d_text\); got shape \(6,\)"):
        WeightedSumMLP(10, np.zeros(6), 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ConcatFusionMLP(10, np.full((2, 3), np.nan), 2)
