"""The NIH ChestX-ray14 label set and how label names read as phrases."""

__all__ = ["NIH_PATHOLOGIES", "label_to_phrase"]

#: The 14 NIH ChestX-ray14 pathologies, in the canonical order of the data set
#: paper (Wang et al., CVPR 2017). "No Finding" is not a label: it is a row of zeros.
NIH_PATHOLOGIES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)


def label_to_phrase(label, mapping=None):
    """Turn a label name into the words a prompt uses.

    Parameters
    ----------
    label : str
        A label name such as ``"Pleural_Thickening"``.
    mapping : dict, optional
        Phrases chosen by the user; a label found here is taken as given.

    Returns
    -------
    str

    Examples
    --------
    >>> label_to_phrase("Pleural_Thickening")
    'pleural thickening'
    >>> label_to_phrase("Mass", {"Mass": "a lung mass"})
    'a lung mass'
    """
    if mapping and label in mapping:
        return mapping[label]
    return str(label).replace("_", " ").strip().lower()
