"""
Save and load a fitted pipeline
===============================

A fitted pipeline holds no model weights: the SigLIP checkpoint is loaded
again from its id or folder when the pipeline next embeds. Two ways to save it:

- ``joblib``: fast and general, but loading a joblib (pickle) file runs code
  from the file. Load only files you made or trust.
- ``skops.io``: a format that loads only the types you allow, so an untrusted
  file cannot run code; :func:`skclipxray.persistence.load` lists the types
  skclipxray's estimators need.
"""

import tempfile

import joblib
import matplotlib.pyplot as plt
import numpy as np
import skops.io
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from skclipxray import ConcatFusionClassifier, PromptEnsembleEmbedder, SigLIPImageEmbedder
from skclipxray.datasets import load_nih_chestxray14
from skclipxray.persistence import TRUSTED_TYPES, load, save
from skclipxray.testing import demo_model, make_synthetic_nih

model, _ = demo_model()
root = tempfile.mkdtemp()
make_synthetic_nih(root, n_images=60)
data = load_nih_chestxray14(root)
pipe = Pipeline([
    ("embed", SigLIPImageEmbedder(model, progress=False)),
    ("clf", ConcatFusionClassifier(prompts=PromptEnsembleEmbedder(model),
                                   hidden_sizes=(64,), max_epochs=20, random_state=0)),
]).fit(data.paths, data.Y)
expected = pipe.predict_proba(data.paths)

# %%
# joblib: for files you trust.
joblib.dump(pipe, f"{root}/pipe.joblib")
print("joblib round trip identical:",
      np.array_equal(joblib.load(f"{root}/pipe.joblib").predict_proba(data.paths), expected))

# %%
# skops: safe to load from others.
save(pipe, f"{root}/pipe.skops")
loaded = load(f"{root}/pipe.skops")
print("skops round trip identical:",
      np.array_equal(loaded.predict_proba(data.paths), expected))
history = loaded.named_steps["clf"].net_.history
print("epochs in the loaded history:", len(history))

# %%
# The training history comes back with the head: its loss, epoch by epoch.
figure, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.plot(history[:, "epoch"], history[:, "train_loss"], marker="o", markersize=3)
ax.set(xlabel="epoch", ylabel="training loss (binary cross-entropy)",
       xticks=range(0, len(history) + 1, 5),
       title="ConcatFusionClassifier, loaded from pipe.skops")
plt.show()

# %%
# The file holds skclipxray's estimators and types skops trusts itself
# (scikit-learn, numpy, builtins); nothing from torch or skorch.
untrusted = skops.io.get_untrusted_types(file=f"{root}/pipe.skops")
print("types beyond skops' defaults:", untrusted)
print("all in TRUSTED_TYPES:", set(untrusted) <= set(TRUSTED_TYPES))

# %%
# A file asking for anything else is refused before it is built, with the
# list of types to review; allow one with ``load(path, trusted=[...])`` only
# once you trust it.
save(FunctionTransformer(func=eval), f"{root}/suspicious.skops")
try:
    load(f"{root}/suspicious.skops")
except TypeError as exc:
    print(exc)
