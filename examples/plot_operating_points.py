"""
Probabilities that mean what they say, and a sensitivity of 0.9
===============================================================

Two questions a reader asks before trusting a classifier: when it says 0.8,
do 8 in 10 such images have the finding? And at which threshold does it
find 90% of them, at what false-positive rate?
:class:`~skclipxray.MultilabelCalibratedClassifierCV` answers the first per
label, :class:`~skclipxray.MultilabelTunedThresholdClassifierCV` the second,
both from out-of-fold probabilities on patient-grouped folds, and both around
any head.

The data are synthetic: embeddings and prompts drawn from
:func:`skclipxray.testing.make_vision_language_world`, with two images per
"patient". They show the mechanism, not a clinical result.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from skclipxray import (
    MultilabelCalibratedClassifierCV,
    MultilabelTunedThresholdClassifierCV,
    TextAnchoredClassifier,
)
from skclipxray.metrics import multilabel_report
from skclipxray.plotting import plot_reliability_diagrams
from skclipxray.testing import make_vision_language_world

world = dict(n_features=128, n_labels=4)
train = make_vision_language_world(2000, random_state=0, **world)
test = make_vision_language_world(4000, random_state=1, **world)
groups, test_groups = np.arange(2000) // 2, np.arange(4000) // 2
text = dict(logit_scale=train.logit_scale, logit_bias=train.logit_bias, device="cpu")

# %%
# Zero-shot scores (a text-anchored head with no training step is zero-shot
# exactly) before and after Platt scaling, fitted on out-of-fold scores.
zero_shot = TextAnchoredClassifier(train.prompts, max_iter=0, **text)
platt = MultilabelCalibratedClassifierCV(zero_shot, method="sigmoid")
platt.fit(train.X, train.Y, groups=groups)
scores = {
    "zero-shot": zero_shot.fit(train.X, train.Y).predict_proba(test.X),
    "zero-shot, Platt-scaled": platt.predict_proba(test.X),
}
for name, proba in scores.items():
    per_label, _ = multilabel_report(test.Y, proba)
    print(f"{name:>24}: mean ECE {per_label['ece'].mean():.3f}, "
          f"mean ROC AUC {per_label['roc_auc'].mean():.3f}")
plot_reliability_diagrams(test.Y, scores, ncols=4)
plt.show()

# %%
# A trained head, calibrated, with one threshold per label for a
# sensitivity of at least 0.9 on the out-of-fold probabilities. The test
# sensitivity and specificity come with intervals that resample whole
# patients.
model = MultilabelTunedThresholdClassifierCV(
    MultilabelCalibratedClassifierCV(TextAnchoredClassifier(train.prompts, **text)),
    objective=("min_sensitivity", 0.9),
)
model.fit(train.X, train.Y, groups=groups)
per_label, _ = multilabel_report(
    test.Y, model.predict_proba(test.X), threshold=model.best_thresholds_,
    n_boot=200, groups=test_groups, random_state=0,
)
columns = ["threshold", "support", "sensitivity", "sensitivity_ci_low",
           "sensitivity_ci_high", "specificity"]
print(per_label[columns].round(3).to_string())
print(pd.DataFrame(model.tuning_results_, index=model.labels_).round(3).to_string())
