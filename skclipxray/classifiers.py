"""Trained heads on image embeddings, as scikit-learn classifiers.

:class:`BaselineClassifier`, :class:`ConcatFusionClassifier` and
:class:`WeightedSumClassifier` train the modules of :mod:`skclipxray.nn` with
skorch. They are ordinary scikit-learn estimators: every training setting is a
top-level parameter (so ``GridSearchCV`` can tune it), ``fit`` builds and
trains a fresh :class:`skorch.NeuralNet`, kept as ``net_`` with its history.

The target decides the task:

- 2-D 0/1 ``y`` (array or DataFrame, one column per label): multilabel, one
  sigmoid per label, binary cross-entropy. ``predict_proba`` and ``predict``
  return ``(n_samples, n_labels)`` arrays.
- 1-D ``y`` (a single column counts as 1-D, as in scikit-learn): binary (one
  sigmoid) or multiclass (softmax, cross-entropy). ``predict_proba`` returns
  ``(n_samples, n_classes)`` and ``predict`` class labels.
"""

import copy
import numbers
import warnings

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state, check_scalar, column_or_1d
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._backbone import resolve_device
from ._validation import check_multilabel_indicator
from .labels import NIH_PATHOLOGIES

__all__ = [
    "BaselineClassifier",
    "ConcatFusionClassifier",
    "WeightedSumClassifier",
]

_LR_SCHEDULES = ("cosine", "plateau", "constant")
_PLATEAU_FACTOR = 0.1
_PLATEAU_PATIENCE = 3


class _ArrayDataset:
    """Rows of in-memory arrays, fetched a whole batch at a time.

    skorch's own dataset goes through scikit-learn's generic indexing for
    every batch; X and y are always numpy arrays here, so plain fancy
    indexing does, at a fraction of the cost per step.
    """

    def __init__(self, X, y=None, length=None):
        self.X = X
        self.y = y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, rows):
        import torch

        X = torch.from_numpy(self.X[rows])
        # skorch expects a target even at prediction time: an empty one.
        y = torch.empty(0) if self.y is None else torch.from_numpy(self.y[rows])
        return X, y


class _Batches:
    """Batches of row indices, shuffled with torch's RNG or in order.

    With ``drop_single``, a last batch holding one sample is left out: batch
    norm cannot train on one sample.
    """

    def __init__(self, n_samples, batch_size, *, shuffle, drop_single):
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        stop = n_samples
        if drop_single and n_samples > batch_size and n_samples % batch_size == 1:
            stop -= 1
        self.stop = stop

    def __iter__(self):
        import torch

        order = torch.randperm(self.n_samples) if self.shuffle else torch.arange(self.n_samples)
        order = order.numpy()
        for start in range(0, self.stop, self.batch_size):
            yield order[start:min(start + self.batch_size, self.stop)]

    def __len__(self):
        return -(-self.stop // self.batch_size)


def _batch_loader(dataset, *, batch_size, shuffle=False, **kwargs):
    """A DataLoader that fetches whole batches by fancy indexing.

    One indexing per batch replaces one per sample plus a collate step: much
    faster for embedding-sized rows. Training batches (``shuffle=True``,
    seeded by ``fit``) never end an epoch on a single sample.
    """
    import torch
    from torch.utils.data import DataLoader

    n_samples = len(dataset)
    if shuffle and n_samples < 2:
        raise ValueError(
            f"Training needs at least 2 samples (batch norm); got {n_samples} "
            "sample after the validation split. Use more data or "
            "early_stopping=False."
        )
    batches = _Batches(n_samples, batch_size, shuffle=shuffle, drop_single=shuffle)
    # A DataLoader draws a base seed from the global RNG unless given a
    # generator: prediction must not change the caller's random state.
    kwargs.setdefault("generator", torch.Generator())
    return DataLoader(dataset, sampler=batches, batch_size=None, **kwargs)


def _fused_optimizer_supported(device):
    """AdamW's fused kernel (several times faster) exists for CPU from torch 2.4 and CUDA."""
    import torch

    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return device.type == "cuda" or (device.type == "cpu" and (major, minor) >= (2, 4))


def _as_hidden_sizes(value, name="hidden_sizes"):
    if isinstance(value, numbers.Integral):
        value = (value,)
    try:
        sizes = tuple(value)
    except TypeError:
        raise TypeError(f"{name}={value!r} must be a tuple of ints.") from None
    if not all(isinstance(s, numbers.Integral) and s >= 1 for s in sizes):
        raise ValueError(f"{name}={value!r} must hold positive integers.")
    return tuple(int(s) for s in sizes)


def _plain(value):
    """Return ``value`` made of builtins and numpy arrays only (else TypeError).

    What a fitted head saves goes through this, so that its pickle or skops
    file holds no torch object.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.item() if value.ndim == 0 else value
    if hasattr(value, "detach"):  # a torch tensor
        return _plain(value.detach().cpu().numpy())
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    raise TypeError(f"{type(value).__name__} is not plain data")


def _plain_history(history):
    """skorch's history (a list of dicts) without entries that are not plain data."""
    def entries(record):
        kept = {}
        for key, value in record.items():
            if key == "batches":
                kept[key] = [entries(batch) for batch in value]
                continue
            try:
                kept[key] = _plain(value)
            except TypeError:
                pass  # e.g. an object a user's callback recorded
        return kept

    return [entries(record) for record in history]


class _BaseHeadClassifier(ClassifierMixin, BaseEstimator):
    """Shared machinery: validation, target handling, skorch training, prediction.

    Subclasses name their module in :meth:`_module_class` (a module of
    :mod:`skclipxray.nn`) and may extend :meth:`_module_kwargs` and
    :meth:`_prepare_extras`.
    """

    def __init__(
        self,
        *,
        hidden_sizes=(512, 256),
        dropout=0.3,
        noise_std=0.01,
        lr=1e-3,
        weight_decay=1e-2,
        max_epochs=30,
        batch_size=64,
        lr_schedule="cosine",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        pos_weight=None,
        threshold=0.5,
        callbacks=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.noise_std = noise_std
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.pos_weight = pos_weight
        self.threshold = threshold
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        _as_hidden_sizes(self.hidden_sizes)
        check_scalar(self.dropout, "dropout", numbers.Real, min_val=0, max_val=1,
                     include_boundaries="left")
        check_scalar(self.noise_std, "noise_std", numbers.Real, min_val=0)
        check_scalar(self.lr, "lr", numbers.Real, min_val=0, include_boundaries="neither")
        check_scalar(self.weight_decay, "weight_decay", numbers.Real, min_val=0)
        check_scalar(self.max_epochs, "max_epochs", numbers.Integral, min_val=1)
        check_scalar(self.batch_size, "batch_size", numbers.Integral, min_val=1)
        check_scalar(self.validation_fraction, "validation_fraction", numbers.Real,
                     min_val=0, max_val=1, include_boundaries="neither")
        check_scalar(self.n_iter_no_change, "n_iter_no_change", numbers.Integral,
                     min_val=1)
        check_scalar(self.verbose, "verbose", numbers.Integral, min_val=0)
        if self.lr_schedule not in _LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} is not one of {_LR_SCHEDULES}."
            )
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise TypeError(f"early_stopping={self.early_stopping!r} must be a bool.")

    def _check_threshold(self):
        """``threshold`` as a scalar or one value per label, all in [0, 1]."""
        threshold = np.asarray(self.threshold, dtype=np.float64)
        if self.task_ == "multilabel" and threshold.ndim == 1:
            expected = len(self.labels_)
        else:
            expected = None
        if threshold.ndim > 1 or (threshold.ndim == 1 and expected is None):
            raise ValueError(
                f"threshold must be a scalar{' or one value per label' if expected else ''}"
                f"; got an array of shape {threshold.shape}."
            )
        if expected is not None and threshold.shape[0] != expected:
            raise ValueError(
                f"threshold has {threshold.shape[0]} values but y has {expected} labels."
            )
        if not np.all((threshold >= 0) & (threshold <= 1)):
            raise ValueError(f"threshold={self.threshold!r} must lie in [0, 1].")
        return threshold

    def _encode_target(self, y, label_names):
        """Decide the task from ``y`` and return it as the loss expects it."""
        if sparse.issparse(y):
            y = y.toarray()
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:
            check_multilabel_indicator(y, label_names)
            self.task_ = "multilabel"
            self.labels_ = (
                np.asarray(label_names, dtype=object)
                if label_names is not None
                else np.arange(y.shape[1])
            )
            self.classes_ = [np.array([0, 1], dtype=y.dtype)] * y.shape[1]
            self._y_dtype = y.dtype
            return y.astype(np.float32)

        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"y has one class only ({classes[0]!r}); a classifier needs at "
                "least 2 classes."
            )
        self.classes_ = classes
        self.labels_ = classes
        if len(classes) == 2:
            self.task_ = "binary"
            return encoded.astype(np.float32).reshape(-1, 1)
        self.task_ = "multiclass"
        return encoded.astype(np.int64)

    @property
    def _n_outputs(self):
        return 1 if self.task_ == "binary" else len(self.labels_)

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
        if isinstance(self.pos_weight, str):
            if self.pos_weight != "balanced":
                raise ValueError(
                    f"pos_weight={self.pos_weight!r} must be None, 'balanced' or "
                    "an array of weights."
                )
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
            "hidden_sizes": _as_hidden_sizes(self.hidden_sizes),
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

        self._check_params()
        label_names = list(y.columns) if hasattr(y, "columns") else None
        X, y = validate_data(self, X, y, multi_output=True, dtype=np.float32)
        if X.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples to train (batch "
                f"norm); got {X.shape[0]} sample."
            )
        y = self._encode_target(y, label_names)
        self._check_threshold()
        if self.task_ == "multilabel":
            prompt_labels = label_names
        else:
            prompt_labels = [str(c) for c in self.classes_]
        self._prepare_extras(prompt_labels)
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
        """The skorch net ``fit`` trains, and ``__setstate__`` rebuilds."""
        import torch

        from ._net import HeadNet

        return HeadNet(
            module=self._module_class(),
            criterion=criterion,
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            dataset=_ArrayDataset,
            iterator_train=_batch_loader,
            iterator_valid=_batch_loader,
            iterator_train__shuffle=True,
            train_split=train_split,
            callbacks=self._callbacks(),
            predict_nonlinearity="auto" if self.task_ == "multiclass" else torch.sigmoid,
            device=str(device),
            verbose=self.verbose,
            optimizer__weight_decay=self.weight_decay,
            optimizer__fused=_fused_optimizer_supported(device),
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
    # skorch pickles a net's module, optimizer and criterion as a nested
    # pickle, which would run arbitrary code even from a skops file. A fitted
    # head is therefore saved as plain data (weights as numpy arrays, the
    # history as lists and dicts) and its net rebuilt when loaded, on the
    # device it was fitted on when available here, else on the CPU. The
    # optimizer's state is not kept: it is only needed to continue training,
    # and ``fit`` always trains a fresh net.
    def __getstate__(self):
        state = dict(super().__getstate__())
        net = state.pop("net_", None)
        if net is not None:
            params = net.get_params(deep=False)
            state["_net_state"] = {
                "device": str(net.device),
                "module_kwargs": {
                    key[len("module__"):]: _plain(value)
                    for key, value in params.items()
                    if key.startswith("module__")
                },
                "module_state": _plain(dict(net.module_.state_dict())),
                "criterion_state": _plain(dict(net.criterion_.state_dict())),
                "history": _plain_history(net.history),
            }
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.pop("_net_state", None)
        super().__setstate__(state)
        if saved is not None:
            self.net_ = self._restore_net(saved)

    def _restore_net(self, saved):
        """Rebuild the fitted skorch net from the plain data of ``__getstate__``."""
        import torch
        from skorch.history import History

        device = self._loading_device(saved["device"])
        criterion_kwargs = {
            key: torch.tensor(np.asarray(value))
            for key, value in saved["criterion_state"].items()
        }
        net = self._build_net(
            self._criterion_class(), criterion_kwargs, saved["module_kwargs"],
            device, train_split=None,
        )
        # Initialising draws random weights, replaced right after: keep the
        # caller's RNG untouched.
        with torch.random.fork_rng(devices=[]):
            net.initialize()
        net.module_.load_state_dict({
            key: torch.tensor(np.asarray(value))
            for key, value in saved["module_state"].items()
        })
        net.history_ = History(saved["history"])
        return net

    def _loading_device(self, fitted_on):
        """The device a loaded head predicts on: where it was fitted, else the CPU."""
        import torch
        from skorch.exceptions import DeviceWarning

        try:
            return resolve_device(fitted_on)
        except ValueError:
            warnings.warn(
                f"{type(self).__name__} was fitted on device {fitted_on!r}, which is "
                "not available on this machine; it is loaded on the CPU.",
                DeviceWarning,
                stacklevel=3,
            )
            return torch.device("cpu")

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

    def predict(self, X):
        """Predicted 0/1 labels (multilabel) or class labels (1-D y).

        A label is predicted when its probability reaches ``threshold``
        (multilabel, and the positive class of a binary y); a multiclass y
        takes the most probable class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_labels) or (n_samples,)
        """
        proba = self.predict_proba(X)
        if self.task_ == "multiclass":
            return self.classes_[proba.argmax(axis=1)]
        threshold = self._check_threshold()
        if self.task_ == "binary":
            return self.classes_[(proba[:, 1] >= threshold).astype(int)]
        return (proba >= threshold).astype(self._y_dtype)


_COMMON_PARAMETERS = """\
    hidden_sizes : tuple of int, default=(512, 256)
        Widths of the hidden layers, usually decreasing.
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
    pos_weight : None, "balanced" or array-like, default=None
        Weight of the positive examples of each label in the loss.
        ``"balanced"`` uses ``n_negative / n_positive`` per label. For a
        multiclass y, per-class weights of the cross-entropy instead
        (``"balanced"`` as in :func:`sklearn.utils.class_weight.compute_class_weight`).
    threshold : float or array-like of shape (n_labels,), default=0.5
        Probability from which ``predict`` says yes: one value for all
        labels, or one per label. Read at prediction time, so it can be
        tuned with ``set_params`` after fitting. Unused for multiclass y.
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

_COMMON_ATTRIBUTES = """\
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


class BaselineClassifier(_BaseHeadClassifier):
    __doc__ = f"""Image embeddings -> fully connected layers -> one output per label.

    Trains a :class:`skclipxray.nn.BaselineMLP` (hidden layers ``Linear ->
    BatchNorm1d -> ReLU -> Dropout``) with binary cross-entropy on the
    logits, AdamW and a learning-rate schedule, through skorch.

    Parameters
    ----------
{_COMMON_PARAMETERS}

    Attributes
    ----------
{_COMMON_ATTRIBUTES}

    See Also
    --------
    ConcatFusionClassifier, WeightedSumClassifier : heads that also use the
        label prompts.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.classifiers import BaselineClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 16)).astype("float32")
    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> head = BaselineClassifier(hidden_sizes=(32,), max_epochs=20, random_state=0)
    >>> head.fit(X, Y).predict_proba(X[:3]).shape
    (3, 2)
    >>> head.predict(X[:3]).shape
    (3, 2)
    >>> len(head.net_.history)
    20
    """

    def _module_class(self):
        from .nn import BaselineMLP

        return BaselineMLP


class _PromptFusionClassifier(_BaseHeadClassifier):
    """Adds the ``prompts`` parameter: one embedding per label, fixed at fit."""

    def _prepare_extras(self, label_names):
        if self.prompts is None:
            raise ValueError(
                f"{type(self).__name__} needs prompts: a PromptEnsembleEmbedder "
                "(or another transformer turning label names into embeddings) or "
                "an array of shape (n_labels, d_text)."
            )
        embedder = None
        if hasattr(self.prompts, "fit_transform"):
            # Names of y's columns (None for a bare array: the transformer's
            # own labels) or of the classes of a 1-D y.
            embedder = clone(self.prompts)
            embeddings = embedder.fit_transform(label_names)
        else:
            embeddings = self.prompts
        embeddings = check_array(embeddings, dtype=np.float32, input_name="prompts")
        expected = len(self.labels_)
        if embeddings.shape[0] != expected:
            what = "labels" if self.task_ == "multilabel" else "classes"
            embedder_labels = list(getattr(embedder, "labels_", None) or [])
            if embedder is not None and label_names is None and embedder_labels:
                shown = ", ".join(map(str, embedder_labels[:3]))
                which = (
                    f"the {len(NIH_PATHOLOGIES)} NIH ChestX-ray14 pathologies"
                    if embedder_labels == list(NIH_PATHOLOGIES)
                    else f"{len(embedder_labels)} labels"
                )
                raise ValueError(
                    f"y has {expected} labels but no column names, so the prompt "
                    f"embedder used its default labels, {which} ({shown}, ...). "
                    "Pass y as a DataFrame whose "
                    "columns name the labels, e.g. pd.DataFrame(y, columns=[...]), "
                    "or give prompts as an array of one embedding per label."
                )
            raise ValueError(
                f"prompts has {embeddings.shape[0]} rows but y has {expected} "
                f"{what}; give one prompt embedding per {what[:-1]}, in the "
                "order of y's columns."
            )
        self.prompt_embeddings_ = embeddings
        embedder_labels = getattr(embedder, "labels_", None)
        if self.task_ == "multilabel" and label_names is None and embedder_labels is not None:
            # y had no column names: the prompts say which label each column is.
            self.labels_ = np.asarray(list(embedder_labels), dtype=object)

    def _module_kwargs(self):
        return {**super()._module_kwargs(), "prompt_embeddings": self.prompt_embeddings_}


_PROMPTS_PARAMETER = """\
    prompts : transformer or array-like of shape (n_labels, d_text)
        The per-label prompt embeddings, stacked into the fixed mega-vector.
        Either an unfitted transformer such as
        :class:`skclipxray.embedders.PromptEnsembleEmbedder`, cloned and
        fitted at ``fit`` with ``fit_transform(label_names)`` (y's column
        names; ``None`` for an array without names, meaning the
        transformer's own labels; the class names for a 1-D y), or the
        embeddings themselves, one row per label in the order of y's
        columns. Required."""

_PROMPT_ATTRIBUTE = """
    prompt_embeddings_ : ndarray of shape (n_labels, d_text)
        The prompt embeddings used, float32."""


class ConcatFusionClassifier(_PromptFusionClassifier):
    __doc__ = f"""Image branch + prompt branch, concatenated, then a classifier MLP.

    Trains a :class:`skclipxray.nn.ConcatFusionMLP`: the image embedding and
    the flattened prompt mega-vector each go through ``Linear -> ReLU ->
    BatchNorm1d -> Dropout`` layers; the two outputs are concatenated and
    classified by an MLP. The mega-vector is fixed (a buffer of the module,
    never trained) and identical for every image.

    Parameters
    ----------
{_PROMPTS_PARAMETER}
{_COMMON_PARAMETERS.replace('''Widths of the hidden layers, usually decreasing.''',
                            '''Widths of the image branch's layers.''')}
    prompt_hidden_sizes : tuple of int, optional
        Widths of the prompt branch's layers; by default ``hidden_sizes``.
    fusion_hidden_sizes : tuple of int, default=(256,)
        Hidden layers of the classifier after the concatenation.

    Attributes
    ----------
{_COMMON_ATTRIBUTES}{_PROMPT_ATTRIBUTE}

    See Also
    --------
    BaselineClassifier, WeightedSumClassifier

    Notes
    -----
    The mega-vector is the same for every image, so the prompt branch gives
    the same output for every sample: a learned constant input to the
    classifier, computed from the prompts. This is the architecture as the
    method describes it, but for one detail: batch statistics of a
    batch-constant input have zero variance, so the prompt branch's batch
    norm layers normalise with fixed statistics (a learned scale and shift).
    Ordinary batch norm there makes its weights drift on rounding noise
    (which differs between thread counts) and, at evaluation, divides the
    lag of its running mean by ``sqrt(eps)``, so that predictions depended
    on the thread count far beyond rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.classifiers import ConcatFusionClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 16)).astype("float32")
    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> prompts = rng.normal(size=(2, 8))  # one embedding per label
    >>> head = ConcatFusionClassifier(prompts, hidden_sizes=(32,),
    ...                               fusion_hidden_sizes=(16,), random_state=0)
    >>> head.fit(X, Y).predict_proba(X[:3]).shape
    (3, 2)
    """

    def __init__(
        self,
        prompts=None,
        *,
        hidden_sizes=(512, 256),
        prompt_hidden_sizes=None,
        fusion_hidden_sizes=(256,),
        dropout=0.3,
        noise_std=0.01,
        lr=1e-3,
        weight_decay=1e-2,
        max_epochs=30,
        batch_size=64,
        lr_schedule="cosine",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        pos_weight=None,
        threshold=0.5,
        callbacks=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            hidden_sizes=hidden_sizes,
            dropout=dropout,
            noise_std=noise_std,
            lr=lr,
            weight_decay=weight_decay,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr_schedule=lr_schedule,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            pos_weight=pos_weight,
            threshold=threshold,
            callbacks=callbacks,
            device=device,
            random_state=random_state,
            verbose=verbose,
        )
        self.prompts = prompts
        self.prompt_hidden_sizes = prompt_hidden_sizes
        self.fusion_hidden_sizes = fusion_hidden_sizes

    def _check_params(self):
        super()._check_params()
        if self.prompt_hidden_sizes is not None:
            _as_hidden_sizes(self.prompt_hidden_sizes, "prompt_hidden_sizes")
        _as_hidden_sizes(self.fusion_hidden_sizes, "fusion_hidden_sizes")

    def _module_class(self):
        from .nn import ConcatFusionMLP

        return ConcatFusionMLP

    def _module_kwargs(self):
        prompt_sizes = self.prompt_hidden_sizes
        return {
            **super()._module_kwargs(),
            "prompt_hidden_sizes": None
            if prompt_sizes is None
            else _as_hidden_sizes(prompt_sizes, "prompt_hidden_sizes"),
            "fusion_hidden_sizes": _as_hidden_sizes(
                self.fusion_hidden_sizes, "fusion_hidden_sizes"
            ),
        }


class WeightedSumClassifier(_PromptFusionClassifier):
    __doc__ = f"""Learned element-wise mix of image and prompts, then an MLP.

    Trains a :class:`skclipxray.nn.WeightedSumMLP`: the flattened prompt
    mega-vector is projected to the image size (``Linear -> ReLU``), mixed
    with the image embedding as ``w_img * image + w_prompt * prompt`` (two
    learned vectors), and the result goes through baseline-style hidden
    layers. The mega-vector is fixed (a buffer, never trained).

    Parameters
    ----------
{_PROMPTS_PARAMETER}
{_COMMON_PARAMETERS}

    Attributes
    ----------
{_COMMON_ATTRIBUTES}{_PROMPT_ATTRIBUTE}

    See Also
    --------
    BaselineClassifier, ConcatFusionClassifier

    Notes
    -----
    The mega-vector is the same for every image, so ``w_prompt *
    projected_prompt`` is a learned shift of the image features, initialised
    from the prompts, shared by all samples.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.classifiers import WeightedSumClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 16)).astype("float32")
    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> prompts = rng.normal(size=(2, 8))  # one embedding per label
    >>> head = WeightedSumClassifier(prompts, hidden_sizes=(32,), random_state=0)
    >>> head.fit(X, Y).net_.module_.w_img.shape
    torch.Size([16])
    """

    def __init__(
        self,
        prompts=None,
        *,
        hidden_sizes=(512, 256),
        dropout=0.3,
        noise_std=0.01,
        lr=1e-3,
        weight_decay=1e-2,
        max_epochs=30,
        batch_size=64,
        lr_schedule="cosine",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        pos_weight=None,
        threshold=0.5,
        callbacks=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            hidden_sizes=hidden_sizes,
            dropout=dropout,
            noise_std=noise_std,
            lr=lr,
            weight_decay=weight_decay,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr_schedule=lr_schedule,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            pos_weight=pos_weight,
            threshold=threshold,
            callbacks=callbacks,
            device=device,
            random_state=random_state,
            verbose=verbose,
        )
        self.prompts = prompts

    def _module_class(self):
        from .nn import WeightedSumMLP

        return WeightedSumMLP
