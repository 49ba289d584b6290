"""
Fit a pipeline from image paths
===============================

``Pipeline([...]).fit(paths, Y)``: the embedder turns image files into SigLIP
embeddings, the head learns the 14 pathologies from them. ``Y`` is a DataFrame,
so the fitted head knows the labels by name.
"""

# %%
# Data: an NIH-like folder (generated here; point ``load_nih_chestxray14`` at
# your own download instead).
import tempfile

import matplotlib.pyplot as plt
from sklearn.pipeline import Pipeline

from skclipxray import BaselineClassifier, SigLIPImageEmbedder
from skclipxray.datasets import load_nih_chestxray14, train_test_split_by_patient
from skclipxray.metrics import multilabel_report
from skclipxray.plotting import plot_label_cooccurrence, plot_label_frequency
from skclipxray.testing import demo_model, make_synthetic_nih

model, is_random = demo_model()
root = tempfile.mkdtemp()
make_synthetic_nih(root, n_images=120)
data = load_nih_chestxray14(root)
paths_train, paths_test, Y_train, Y_test = train_test_split_by_patient(
    data.paths, data.Y, groups=data.groups, test_size=0.25, random_state=0
)
print(f"{len(paths_train)} training and {len(paths_test)} test images")

# %%
# How often each pathology occurs, and which ones occur together: one figure,
# each plot drawn into its own axes.
figure, (left, right) = plt.subplots(1, 2, figsize=(13, 6), layout="constrained")
plot_label_frequency(data.Y, ax=left)
plot_label_cooccurrence(data.Y, normalize=True, annotate=False, ax=right)
plt.show()

# %%
# The pipeline: image paths in, 14 probabilities out.
pipe = Pipeline([
    ("embed", SigLIPImageEmbedder(model, progress=False)),
    ("clf", BaselineClassifier(hidden_sizes=(128,), max_epochs=40, random_state=0)),
])
pipe.fit(paths_train, Y_train)
print("labels:", list(pipe[-1].labels_)[:3], "...")

# %%
# Evaluate on patients never seen in training.
per_label, summary = multilabel_report(Y_test, pipe.predict_proba(paths_test))
print(summary.round(3).to_string())
if is_random:
    print("(random model, generated images: the numbers show the workflow, not medicine)")
