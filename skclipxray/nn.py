"""The torch modules behind the trained heads: plain ``torch.nn.Module`` classes.

Three architectures, each mapping a batch of image embeddings ``(n, d_image)``
to one logit per output ``(n, n_outputs)``:

- :class:`BaselineMLP`: fully connected layers of decreasing size, each
  followed by batch norm, ReLU and dropout.
- :class:`ConcatFusionMLP`: an image branch and a prompt branch, concatenated
  and passed to a classifier MLP.
- :class:`WeightedSumMLP`: the prompts projected to the image size and mixed
  with the image by two learned weight vectors, then an MLP.

The fusion modules receive the per-label prompt embeddings ``(n_labels,
d_text)`` once, at construction. They are flattened into the prompt
"mega-vector" and kept as a buffer: it follows the module to its device, is
saved in its ``state_dict`` and is never trained.

Since the mega-vector is the same for every image, whatever the prompt side
computes is the same for every sample of a batch: the fusion heads add a
prompt-derived term that shifts the image features, not one that varies with
the image. Batch statistics of that batch-constant input have zero variance,
so the prompt branch of :class:`ConcatFusionMLP` normalises with fixed
statistics instead (a learned scale and shift, the same in training and
evaluation); ordinary batch norm there would train on rounding noise and
evaluate far from how it trained.

These modules know nothing about scikit-learn; :mod:`skclipxray.classifiers`
trains them.
"""

import torch
from torch import nn

from ._validation import check_hidden_sizes

__all__ = [
    "BaselineMLP",
    "ConcatFusionMLP",
    "Dropout",
    "GaussianNoise",
    "WeightedSumMLP",
]


class GaussianNoise(nn.Module):
    """Add Gaussian noise to the input while training; do nothing in evaluation.

    Parameters
    ----------
    std : float, default=0.0
        Standard deviation of the noise. ``0`` turns the layer off.

    Examples
    --------
    >>> import torch
    >>> noise = GaussianNoise(std=0.1)
    >>> x = torch.zeros(4, 3)
    >>> bool((noise(x) != 0).any())
    True
    >>> bool((noise.eval()(x) == 0).all())
    True
    """

    def __init__(self, std=0.0):
        super().__init__()
        if std < 0:
            raise ValueError(f"std={std} must be >= 0.")
        self.std = float(std)

    def forward(self, x):
        if self.training and self.std > 0:
            return torch.randn_like(x).mul_(self.std).add_(x)
        return x

    def extra_repr(self):
        return f"std={self.std}"


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with a faster mask on the CPU.

    torch's CPU dropout draws its mask with a serial Bernoulli sampler; a
    uniform draw compared with ``p`` gives the same mask distribution and is
    vectorised and multi-threaded, so forward and backward passes take less
    time on embedding-sized batches. Other devices use torch's own kernel.

    Examples
    --------
    >>> import torch
    >>> dropout = Dropout(p=0.5)
    >>> x = torch.ones(10_000)
    >>> sorted(torch.unique(dropout(x)).tolist())
    [0.0, 2.0]
    >>> bool((dropout.eval()(x) == x).all())
    True
    """

    def forward(self, x):
        if not self.training or self.p in (0.0, 1.0) or x.device.type != "cpu":
            return super().forward(x)
        # Built in place (one float tensor, no bool mask): a mask-sized
        # allocation and a pass over it less per call.
        scale = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * scale


class _BatchConstantNorm(nn.BatchNorm1d):
    """Batch norm for an input that is the same for every sample of a batch.

    The batch variance of identical rows is zero, so ordinary batch norm
    divides rounding residuals by ``sqrt(eps)``: in training its output is
    the learned shift whatever the input, the layers before it receive
    gradients that are pure rounding noise (which an adaptive optimizer
    turns into full-size steps, in a direction that depends on the thread
    count), and at evaluation the lag of the running mean behind that drift
    is amplified several hundred times. This layer always normalises with
    its running statistics, which training leaves at their initial mean 0
    and variance 1: a learned per-feature scale and shift, the same in
    training and evaluation. It is a ``BatchNorm1d`` so that its state keeps
    the same entries.
    """

    def forward(self, x):
        return nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=False, momentum=0.0, eps=self.eps,
        )


def _dense_layers(in_features, hidden_sizes, dropout, *, norm_before_relu,
                  norm=nn.BatchNorm1d):
    """``Linear`` layers of the given sizes, each followed by its regularisers.

    ``norm_before_relu`` orders each block as Linear, BatchNorm, ReLU, Dropout
    (the baseline's order); otherwise Linear, ReLU, BatchNorm, Dropout (the
    fusion branches' order, as the method describes them). ``norm`` is the
    normalisation layer's class.
    """
    layers = []
    for size in hidden_sizes:
        layers.append(nn.Linear(in_features, size))
        if norm_before_relu:
            layers += [norm(size), nn.ReLU()]
        else:
            layers += [nn.ReLU(), norm(size)]
        layers.append(Dropout(dropout))
        in_features = size
    return nn.Sequential(*layers), in_features


def _as_prompt_tensor(prompt_embeddings):
    prompts = torch.as_tensor(prompt_embeddings, dtype=torch.float32)
    if prompts.ndim != 2 or 0 in prompts.shape:
        raise ValueError(
            "prompt_embeddings must be a non-empty 2-D array of shape "
            f"(n_labels, d_text); got shape {tuple(prompts.shape)}."
        )
    if not torch.isfinite(prompts).all():
        raise ValueError("prompt_embeddings holds NaN or infinite values.")
    return prompts


class _PromptBufferMixin:
    """Keep the flattened prompts as a buffer (moved and saved, never trained)."""

    def _register_prompts(self, prompt_embeddings):
        prompts = _as_prompt_tensor(prompt_embeddings)
        self.n_prompts, self.prompt_dim = prompts.shape
        # clone: the module must not share memory with the caller's array.
        self.register_buffer("prompt_vector", prompts.reshape(-1).clone())

    def _prompt_batch(self, batch_size):
        """The mega-vector repeated for each sample of the batch (a view, no copy)."""
        return self.prompt_vector.unsqueeze(0).expand(batch_size, -1)


class BaselineMLP(nn.Module):
    """Image features -> fully connected layers -> one logit per output.

    Each hidden layer is ``Linear -> BatchNorm1d -> ReLU -> Dropout``.

    Parameters
    ----------
    n_features : int
        Size of the image embedding.
    n_outputs : int
        Number of logits (labels).
    hidden_sizes : tuple of int, default=(512, 256)
        Width of each hidden layer, usually decreasing.
    dropout : float, default=0.3
        Dropout probability after each hidden layer.
    noise_std : float, default=0.0
        Standard deviation of the Gaussian noise added to the input while
        training.

    Attributes
    ----------
    noise : GaussianNoise
    body : torch.nn.Sequential
        The hidden layers.
    output : torch.nn.Linear
        The last layer, giving the logits.

    Examples
    --------
    >>> import torch
    >>> module = BaselineMLP(n_features=8, n_outputs=3, hidden_sizes=(16, 4))
    >>> module.eval()(torch.randn(5, 8)).shape
    torch.Size([5, 3])
    """

    def __init__(
        self, n_features, n_outputs, hidden_sizes=(512, 256), dropout=0.3, noise_std=0.0
    ):
        super().__init__()
        hidden_sizes = check_hidden_sizes(hidden_sizes)
        self.noise = GaussianNoise(noise_std)
        self.body, width = _dense_layers(
            n_features, hidden_sizes, dropout, norm_before_relu=True
        )
        self.output = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.output(self.body(self.noise(x)))


class ConcatFusionMLP(_PromptBufferMixin, nn.Module):
    """Image branch and prompt branch, concatenated, then a classifier MLP.

    Both branches are made of ``Linear -> ReLU -> BatchNorm1d -> Dropout``
    layers; the prompt branch reads the flattened prompt mega-vector. Its
    input is the same for every sample, so its batch norm layers normalise
    with their fixed initial statistics (mean 0, variance 1), which leaves a
    learned per-feature scale and shift: batch statistics of identical rows
    have zero variance. The
    classifier MLP uses the baseline's ``Linear -> BatchNorm1d -> ReLU ->
    Dropout`` layers and ends with one logit per output.

    Parameters
    ----------
    n_features : int
        Size of the image embedding.
    prompt_embeddings : array-like of shape (n_labels, d_text)
        One prompt embedding per label, stored flattened as the buffer
        ``prompt_vector``.
    n_outputs : int
        Number of logits.
    hidden_sizes : tuple of int, default=(512, 256)
        Layers of the image branch.
    prompt_hidden_sizes : tuple of int, optional
        Layers of the prompt branch; by default the same as ``hidden_sizes``.
    fusion_hidden_sizes : tuple of int, default=(256,)
        Hidden layers of the classifier MLP after the concatenation; ``()``
        makes it a single linear layer.
    dropout : float, default=0.3
    noise_std : float, default=0.0
        Gaussian noise added to the image features while training.

    Attributes
    ----------
    image_branch, prompt_branch, classifier : torch.nn.Sequential
    output : torch.nn.Linear
    prompt_vector : torch.Tensor of shape (n_labels * d_text,)
        The fixed mega-vector (a buffer).

    Examples
    --------
    >>> import torch
    >>> module = ConcatFusionMLP(8, torch.randn(3, 6), n_outputs=3,
    ...                          hidden_sizes=(16,), fusion_hidden_sizes=(8,))
    >>> module.eval()(torch.randn(5, 8)).shape
    torch.Size([5, 3])
    >>> module.prompt_vector.shape, module.prompt_vector.requires_grad
    (torch.Size([18]), False)
    """

    def __init__(
        self,
        n_features,
        prompt_embeddings,
        n_outputs,
        hidden_sizes=(512, 256),
        prompt_hidden_sizes=None,
        fusion_hidden_sizes=(256,),
        dropout=0.3,
        noise_std=0.0,
    ):
        super().__init__()
        hidden_sizes = check_hidden_sizes(hidden_sizes)
        prompt_hidden_sizes = (
            hidden_sizes
            if prompt_hidden_sizes is None
            else check_hidden_sizes(prompt_hidden_sizes, "prompt_hidden_sizes")
        )
        fusion_hidden_sizes = check_hidden_sizes(fusion_hidden_sizes, "fusion_hidden_sizes")
        self._register_prompts(prompt_embeddings)
        self.noise = GaussianNoise(noise_std)
        self.image_branch, image_width = _dense_layers(
            n_features, hidden_sizes, dropout, norm_before_relu=False
        )
        self.prompt_branch, prompt_width = _dense_layers(
            self.prompt_vector.numel(), prompt_hidden_sizes, dropout,
            norm_before_relu=False, norm=_BatchConstantNorm,
        )
        self.classifier, width = _dense_layers(
            image_width + prompt_width, fusion_hidden_sizes, dropout,
            norm_before_relu=True,
        )
        self.output = nn.Linear(width, n_outputs)

    def forward(self, x):
        image = self.image_branch(self.noise(x))
        prompt = self.prompt_branch(self._prompt_batch(x.shape[0]))
        return self.output(self.classifier(torch.cat([image, prompt], dim=1)))


class WeightedSumMLP(_PromptBufferMixin, nn.Module):
    """Learned element-wise mix of image and projected prompts, then an MLP.

    The mega-vector is projected to the image size (``Linear -> ReLU``), then
    ``combined = w_img * image + w_prompt * projected_prompt`` with two learned
    vectors of the image size (both start at one), and ``combined`` goes
    through baseline-style hidden layers to one logit per output.

    Parameters
    ----------
    n_features : int
        Size of the image embedding.
    prompt_embeddings : array-like of shape (n_labels, d_text)
        One prompt embedding per label, stored flattened as the buffer
        ``prompt_vector``.
    n_outputs : int
        Number of logits.
    hidden_sizes : tuple of int, default=(512, 256)
        Hidden layers of the MLP after the weighted sum.
    dropout : float, default=0.3
    noise_std : float, default=0.0
        Gaussian noise added to the image features while training.

    Attributes
    ----------
    prompt_projection : torch.nn.Sequential
        ``Linear(n_labels * d_text, n_features) -> ReLU``.
    w_img, w_prompt : torch.nn.Parameter of shape (n_features,)
    body : torch.nn.Sequential
    output : torch.nn.Linear
    prompt_vector : torch.Tensor of shape (n_labels * d_text,)
        The fixed mega-vector (a buffer).

    Examples
    --------
    >>> import torch
    >>> module = WeightedSumMLP(8, torch.randn(3, 6), n_outputs=3, hidden_sizes=(16,))
    >>> module.eval()(torch.randn(5, 8)).shape
    torch.Size([5, 3])
    >>> module.w_img.shape
    torch.Size([8])
    """

    def __init__(
        self,
        n_features,
        prompt_embeddings,
        n_outputs,
        hidden_sizes=(512, 256),
        dropout=0.3,
        noise_std=0.0,
    ):
        super().__init__()
        hidden_sizes = check_hidden_sizes(hidden_sizes)
        self._register_prompts(prompt_embeddings)
        self.noise = GaussianNoise(noise_std)
        self.prompt_projection = nn.Sequential(
            nn.Linear(self.prompt_vector.numel(), n_features), nn.ReLU()
        )
        self.w_img = nn.Parameter(torch.ones(n_features))
        self.w_prompt = nn.Parameter(torch.ones(n_features))
        self.body, width = _dense_layers(
            n_features, hidden_sizes, dropout, norm_before_relu=True
        )
        self.output = nn.Linear(width, n_outputs)

    def forward(self, x):
        # The projection is the same for every sample: compute it once.
        prompt = self.prompt_projection(self.prompt_vector.unsqueeze(0))
        combined = self.w_img * self.noise(x) + self.w_prompt * prompt
        return self.output(self.body(combined))
