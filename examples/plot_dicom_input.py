"""
Hospital DICOM files
====================

DICOM radiographs come compressed (JPEG, JPEG 2000, JPEG-LS), with a VOI LUT
or window, and often as MONOCHROME1 (white is air). ``read_image`` applies the
modality and VOI transforms, inverts MONOCHROME1 so that bone is bright, and
scales to 8 bits; the embedder reads DICOMs like any other path. Install the
``dicom`` extra for the decoders.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from skclipxray import SigLIPImageEmbedder, read_image
from skclipxray.testing import demo_model

model, _ = demo_model()
try:
    here = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs examples from their folder, without __file__
    here = Path.cwd()
folder = here.parent / "tests" / "data" / "real-cxr"
dicoms = sorted(folder.glob("*.dcm"))
images = [read_image(path) for path in dicoms]
for path, image in zip(dicoms, images):
    print(f"{path.name:>64}: {image.size[0]}x{image.size[1]}, mean grey {np.asarray(image).mean():.0f}")

# %%
# As the embedder reads them: 8-bit greyscale, bone bright, except in the copy
# of the SIIM file relabelled MONOCHROME1, which its header says to invert.
figure, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.4), layout="constrained")
for ax, path, image in zip(axes, dicoms, images):
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    name = path.stem if len(path.stem) < 24 else f"{path.stem[:8]}...{path.stem[-8:]}"
    ax.set_title(name, fontsize="small")
    ax.set_axis_off()
plt.show()

# %%
# The SIIM file and its copy relabelled MONOCHROME1 read as exact inverses.
siim = np.asarray(read_image(folder / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"))
fake = np.asarray(read_image(folder / "Fake_MONOHR1.dcm"))
print("inverse of each other:", bool((fake == 255 - siim).all()))

embeddings = SigLIPImageEmbedder(model, progress=False).fit_transform(dicoms)
print("embeddings:", embeddings.shape)
