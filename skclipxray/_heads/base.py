"""The scikit-learn core of the trained heads: parameters, target, loss, training, prediction.

:class:`BaseHeadClassifier` holds everything the heads share; a head names
its torch module (:meth:`~BaseHeadClassifier._module_class`) and the
arguments it takes (:meth:`~BaseHeadClassifier._module_kwargs`).
:class:`PromptFusionClassifier` adds the ``prompts`` parameter of the heads
that read one embedding per label. The torch side lives in :mod:`.net` and
the saved state in :mod:`.state`; both are imported only when needed.
"""

import copy
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted, validate_data

from .._device import resolve_device
from .._validation import check_hidden_sizes
from .._text import PROMPT_CONSTRAINTS, fit_label_embeddings
from .state import net_state, restore_net
from .target import TargetMixin

__all__ = ["BaseHeadClassifier", "PromptFusionClassifier", "store_params"]

_PLATEAU_FACTOR = 0.1
_PLATEAU_PATIENCE = 3

#: Constraint of a ``*hidden_sizes`` parameter; its items are checked by
#: :func:`~skclipxray._validation.check_hidden_sizes`.
SIZES = ["array-like", Interval(Integral, 1, None, closed="left")]


def store_params(estimator, params):
    """Set each ``__init__`` argument as the attribute of the same name.

    ``params`` is the ``locals()`` of ``__init__``; scikit-learn reads the
    parameters back from the signature, which each head spells out.
    """
    for name, value in params.items():
        if name != "self":
            setattr(estimator, name, value)


class BaseHeadClassifier(TargetMixin, ClassifierMixin, BaseEstimator):
    """Shared machinery: target handling, skorch training, prediction.

    Subclasses declare their ``__init__`` (every parameter of
    ``_parameter_constraints``), name their module in :meth:`_module_class`
    (a module of :mod:`skclipxray.nn`) and may extend :meth:`_layer_sizes`,
    :meth:`_module_kwargs` and :meth:`_prepare_extras`.
    """

    _parameter_constraints: dict = {
        "hidden_sizes": SIZES,
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "noise_std": [Interval(Real, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr_schedule": [StrOptions({"cosine", "plateau", "constant"})],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "pos_weight": [
            None, StrOptions({"balanced"}), "array-like",
            Interval(Real, 0, None, closed="neither"),
        ],
        # Per label: checked against the labels once y is known.
        "threshold": [Interval(Real, 0, 1, closed="both"), "array-like", dict],
        "callbacks": [None, list, tuple],
        # A name or a torch.device: resolve_device checks it and says which it knows.
        "device": "no_validation",
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    # ------------------------------------------------------------------ checks
    def _layer_sizes(self):
        """The ``*hidden_sizes`` parameters, checked item by item, as the module takes them."""
        return {"hidden_sizes": check_hidden_sizes(self.hidden_sizes)}

    def _criterion_class(self):
        import torch

        if self.task_ == "multiclass":
            return torch.nn.CrossEntropyLoss
        return torch.nn.BCEWithLogitsLoss

    def _criterion(self, y):
        """The loss, with its per-output weights when ``pos_weight`` asks for them."""
        import torch

        multiclass = self.task_ == "multiclass"
        criterion = self._criterion_class()
        if self.pos_weight is None:
            return criterion, {}
        n_outputs = self._n_outputs
        if isinstance(self.pos_weight, str):  # "balanced"
            if multiclass:
                weight = compute_class_weight(
                    "balanced", classes=np.arange(n_outputs), y=y
                )
            else:
                positives = y.sum(axis=0)
                negatives = len(y) - positives
                # A label never positive in y has nothing to up-weight.
                weight = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
        else:
            weight = np.asarray(self.pos_weight, dtype=np.float64)
            if weight.ndim == 0:
                weight = np.full(n_outputs, float(weight))
            what = "classes" if multiclass else "labels"
            if weight.shape != (n_outputs,):
                raise ValueError(
                    f"pos_weight has shape {weight.shape}; expected one weight per "
                    f"{'output' if self.task_ == 'binary' else what[:-1]}, shape "
                    f"({n_outputs},)."
                )
            if not np.all(np.isfinite(weight) & (weight > 0)):
                raise ValueError("pos_weight must hold finite positive numbers.")
        name = "weight" if multiclass else "pos_weight"
        return criterion, {name: torch.as_tensor(weight, dtype=torch.float32)}

    # ----------------------------------------------------------- subclass hooks
    def _module_class(self):
        raise NotImplementedError

    def _prepare_extras(self, label_names):
        """Fit whatever the module needs besides X (the fusion heads' prompts)."""

    def _module_kwargs(self):
        return {
            **self._layer_sizes(),
            "dropout": float(self.dropout),
            "noise_std": float(self.noise_std),
        }

    # -------------------------------------------------------------- training
    def _callbacks(self):
        from skorch.callbacks import EarlyStopping, LRScheduler
        from torch.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau

        monitor = "valid_loss" if self.early_stopping else "train_loss"
        callbacks = []
        if self.lr_schedule == "cosine":
            callbacks.append(
                ("lr_scheduler", LRScheduler(policy=CosineAnnealingLR, T_max=self.max_epochs))
            )
        elif self.lr_schedule == "plateau":
            callbacks.append(
                ("lr_scheduler", LRScheduler(
                    policy=ReduceLROnPlateau, monitor=monitor,
                    factor=_PLATEAU_FACTOR, patience=_PLATEAU_PATIENCE,
                ))
            )
        if self.early_stopping:
            callbacks.append(
                ("early_stopping", EarlyStopping(
                    monitor="valid_loss", patience=self.n_iter_no_change, load_best=True,
                ))
            )
        # Copied so that fit never changes the objects held in the parameter.
        callbacks.extend(copy.deepcopy(list(self.callbacks or [])))
        return callbacks

    @_fit_context(
        # The fusion heads fit their prompt transformer inside: it checks its
        # own parameters.
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y):
        """Train a fresh network on image embeddings ``X`` and targets ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.
        y : array-like of shape (n_samples, n_labels) or (n_samples,)
            A 0/1 indicator matrix or DataFrame (multilabel; a DataFrame's
            column names become ``labels_``), or class labels.

        Returns
        -------
        self
        """
        import torch
        from skorch.dataset import ValidSplit

        self._layer_sizes()  # what the constraints cannot say
        label_names = list(y.columns) if hasattr(y, "columns") else None
        X, y = validate_data(self, X, y, multi_output=True, dtype=np.float32)
        if X.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples to train (batch "
                f"norm); got {X.shape[0]} sample."
            )
        y = self._encode_target(y, label_names)
        self._prepare_extras(self._prompt_labels(label_names))
        self._check_threshold()
        criterion, criterion_kwargs = self._criterion(y)

        device = resolve_device(self.device)
        rng = check_random_state(self.random_state)
        torch_seed, split_seed = rng.randint(np.iinfo(np.int32).max, size=2)
        train_split = (
            ValidSplit(
                self.validation_fraction,
                stratified=self.task_ != "multilabel",
                random_state=int(split_seed),
            )
            if self.early_stopping
            else None
        )
        module_kwargs = {
            "n_features": X.shape[1],
            "n_outputs": self._n_outputs,
            **self._module_kwargs(),
        }
        net = self._build_net(
            criterion, criterion_kwargs, module_kwargs, device, train_split
        )
        # A private RNG stream: weights, shuffling, dropout and noise are
        # reproducible, and the caller's global torch RNG is left untouched.
        cuda = []
        if device.type == "cuda":
            cuda = [torch.cuda.current_device() if device.index is None else device.index]
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(torch_seed))
            net.fit(X, y)
        self._release_training_references(net)
        self.net_ = net
        self.n_iter_ = len(net.history)
        return self

    def _build_net(self, criterion, criterion_kwargs, module_kwargs, device, train_split):
        """The skorch net ``fit`` trains, and loading rebuilds."""
        import torch

        from .net import ArrayDataset, HeadNet, batch_loader, fused_optimizer_supported

        return HeadNet(
            module=self._module_class(),
            criterion=criterion,
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            dataset=ArrayDataset,
            iterator_train=batch_loader,
            iterator_valid=batch_loader,
            iterator_train__shuffle=True,
            train_split=train_split,
            callbacks=self._callbacks(),
            predict_nonlinearity="auto" if self.task_ == "multiclass" else torch.sigmoid,
            device=str(device),
            verbose=self.verbose,
            optimizer__weight_decay=self.weight_decay,
            optimizer__fused=fused_optimizer_supported(device),
            **{f"module__{key}": value for key, value in module_kwargs.items()},
            **{f"criterion__{key}": value for key, value in criterion_kwargs.items()},
        )

    @staticmethod
    def _release_training_references(net):
        # The LR scheduler keeps a reference to the optimizer (and so to its
        # state on the training device) outside the attributes that skorch
        # maps to the CPU when unpickling; drop it, it is rebuilt at every fit.
        for _, callback in net.callbacks_:
            if hasattr(callback, "lr_scheduler_"):
                callback.lr_scheduler_ = None

    # ----------------------------------------------------------- persistence
    # The net is saved as plain data and rebuilt when loaded (see .state).
    def __getstate__(self):
        saved = dict(super().__getstate__())
        net = saved.pop("net_", None)
        if net is not None:
            saved["_net_state"] = net_state(net)
        return saved

    def __setstate__(self, saved):
        saved = dict(saved)
        net = saved.pop("_net_state", None)
        super().__setstate__(saved)
        if net is not None:
            self.net_ = restore_net(net, self._rebuild_net, type(self).__name__)

    def _rebuild_net(self, criterion_kwargs, module_kwargs, device):
        return self._build_net(
            self._criterion_class(), criterion_kwargs, module_kwargs, device,
            train_split=None,
        )

    # ------------------------------------------------------------ prediction
    def predict_proba(self, X):
        """Probabilities of each label (multilabel) or class (1-D y).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_labels) or (n_samples, n_classes)
            For multilabel y, column ``j`` is the probability of label ``j``;
            rows need not sum to one. For 1-D y, columns follow ``classes_``.
        """
        check_is_fitted(self, "net_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        proba = self.net_.predict_proba(X).astype(np.float64, copy=False)
        if self.task_ == "binary":
            proba = np.hstack([1.0 - proba, proba])
        return proba


class PromptFusionClassifier(BaseHeadClassifier):
    """Adds the ``prompts`` parameter: one embedding per label, fixed at fit."""

    _parameter_constraints: dict = {
        **BaseHeadClassifier._parameter_constraints,
        # None is refused at fit, with a message saying what to give.
        "prompts": PROMPT_CONSTRAINTS["prompts"],
    }

    def _prepare_extras(self, label_names):
        embeddings, embedder = fit_label_embeddings(
            self.prompts, label_names, len(self.labels_),
            what="labels" if self.task_ == "multilabel" else "classes",
            owner=type(self).__name__,
        )
        self.prompt_embeddings_ = embeddings
        self._name_labels_by_prompts(label_names, getattr(embedder, "labels_", None))

    def _module_kwargs(self):
        return {**super()._module_kwargs(), "prompt_embeddings": self.prompt_embeddings_}


# ---------------------------------------------------------------- docstrings
# Pieces of the public heads' docstrings, for the parameters they share.

HIDDEN_SIZES_PARAMETER = """\
    hidden_sizes : tuple of int, default=(512, 256)
        Widths of the hidden layers, usually decreasing."""

TRAINING_PARAMETERS = """\
    dropout : float, default=0.3
        Dropout probability after each hidden layer.
    noise_std : float, default=0.01
        Standard deviation of the Gaussian noise added to the image
        embeddings while training (never at prediction).
    lr : float, default=1e-3
        Learning rate of the AdamW optimizer.
    weight_decay : float, default=1e-2
        AdamW's decoupled weight decay.
    max_epochs : int, default=30
        Passes over the training data (fewer with early stopping).
    batch_size : int, default=64
        Samples per gradient step and per prediction batch.
    lr_schedule : {"cosine", "plateau", "constant"}, default="cosine"
        ``"cosine"`` anneals the learning rate to zero over ``max_epochs``;
        ``"plateau"`` divides it by 10 when the loss (validation loss with
        early stopping, training loss otherwise) has not improved for 3 epochs.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (not
        stratified for multilabel y), stop when the validation loss has not
        improved for ``n_iter_no_change`` epochs and keep the best weights.
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping=True``.
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.
    pos_weight : None, "balanced", float or array-like, default=None
        Weight of the positive examples of each label in the loss.
        ``"balanced"`` uses ``n_negative / n_positive`` per label. For a
        multiclass y, per-class weights of the cross-entropy instead
        (``"balanced"`` as in :func:`sklearn.utils.class_weight.compute_class_weight`).
    threshold : float, array-like of shape (n_labels,) or dict, default=0.5
        Probability from which ``predict`` says yes: one value for all
        labels, or one per label (in the order of ``labels_``; a Series or
        dict is matched to ``labels_`` by name). Read at prediction time, so
        it can be tuned with ``set_params`` after fitting. Unused for
        multiclass y.
    callbacks : list of skorch callbacks, optional
        Extra callbacks for the skorch net (``(name, callback)`` pairs or
        callbacks), e.g. :class:`skorch.callbacks.EpochScoring`; copied at
        every fit.
    device : str, default="auto"
        Where to train: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"`` or ``"mps"``. A fitted head unpickled on
        a machine without that device predicts on the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, shuffling, dropout, noise and validation split.
        An int makes a fit on the CPU reproducible bit for bit.
    verbose : int, default=0
        ``>0`` prints skorch's table of losses at every epoch."""

PROMPTS_PARAMETER = """\
    prompts : transformer or array-like of shape (n_labels, d_text)
        The per-label prompt embeddings, stacked into the fixed mega-vector.
        Either an unfitted transformer such as
        :class:`~skclipxray.prompts.PromptEnsembleEmbedder`, cloned and
        fitted at ``fit`` with ``fit_transform(label_names)`` (y's column
        names; ``None`` for an array without names, meaning the
        transformer's own labels; the class names for a 1-D y), or the
        embeddings themselves, one row per label in the order of y's
        columns. Required."""

ATTRIBUTES = """\
    labels_ : ndarray
        Names of the columns of ``predict_proba``: y's column names (or
        ``0..n_labels-1``; for the fusion heads, the prompt transformer's
        ``labels_`` when it has them) for multilabel y, the classes for 1-D y.
    classes_ : ndarray or list of ndarray
        The classes for 1-D y; for multilabel y, ``[0, 1]`` for each label
        (scikit-learn's multi-output convention).
    task_ : {"multilabel", "binary", "multiclass"}
        What ``y`` was taken for.
    net_ : skorch.NeuralNet
        The trained net; ``net_.history`` holds the losses per epoch and
        ``net_.module_`` the torch module.
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of str
        Names of the features seen during fit, when ``X`` has string column
        names."""

PROMPT_ATTRIBUTE = """\
    prompt_embeddings_ : ndarray of shape (n_labels, d_text)
        The prompt embeddings used, float32."""
