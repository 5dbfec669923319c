"""The Cityscapes label table, taken from cityscapesscripts so no id is typed by hand.

Ground-truth PNGs store *labelIds* (0..33); training and evaluation use the 19 *trainIds*
with 255 meaning "ignore". The lookup tables below convert between the two with one
numpy indexing operation, which is what the data loader does per image.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE_INDEX = 255
NUM_CLASSES = 19

# "license plate" has id -1: it never appears in a labelIds PNG, so it is left out.
_PIXEL_LABELS = tuple(label for label in _CS_LABELS if label.id >= 0)

#: name -> labelId, e.g. ``LABEL_ID["road"] == 7``.
LABEL_ID: dict[str, int] = {label.name: label.id for label in _PIXEL_LABELS}

#: Every labelId that may occur in a Cityscapes labelIds PNG.
VALID_LABEL_IDS: frozenset[int] = frozenset(LABEL_ID.values())


def _label_to_train_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in _PIXEL_LABELS:
        if 0 <= label.trainId < NUM_CLASSES:
            lut[label.id] = label.trainId
    return lut


def _train_to_label_lut() -> np.ndarray:
    # Anything that is not a train class (255 included) becomes "unlabeled".
    lut = np.full(256, LABEL_ID["unlabeled"], dtype=np.uint8)
    for label in _PIXEL_LABELS:
        if 0 <= label.trainId < NUM_CLASSES:
            lut[label.trainId] = label.id
    return lut


#: labelId (0..255) -> trainId (0..18, or 255 for ignored and unknown ids).
LABEL_TO_TRAIN: np.ndarray = _label_to_train_lut()
#: trainId (0..255) -> labelId, for writing predictions in the official labelIds format.
TRAIN_TO_LABEL: np.ndarray = _train_to_label_lut()
#: A mask over 0..255 that is True for labelIds that exist in the table.
VALID_LABEL_MASK: np.ndarray = np.isin(np.arange(256), sorted(VALID_LABEL_IDS))

_TRAIN_LABELS = sorted(
    (label for label in _PIXEL_LABELS if 0 <= label.trainId < NUM_CLASSES),
    key=lambda label: label.trainId,
)
#: The 19 class names in trainId order.
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN_LABELS)
#: The official colour of each trainId, shape (19, 3), uint8.
PALETTE: np.ndarray = np.array([label.color for label in _TRAIN_LABELS], dtype=np.uint8)

for _table in (LABEL_TO_TRAIN, TRAIN_TO_LABEL, VALID_LABEL_MASK, PALETTE):
    _table.setflags(write=False)
assert len(CLASS_NAMES) == NUM_CLASSES


def label_to_train(label_ids: np.ndarray) -> np.ndarray:
    """Map a uint8 labelIds array to trainIds (255 = ignore)."""
    return LABEL_TO_TRAIN[label_ids]


def train_to_label(train_ids: np.ndarray) -> np.ndarray:
    """Map a trainIds array (e.g. a prediction) back to official labelIds."""
    return TRAIN_TO_LABEL[np.asarray(train_ids, dtype=np.uint8)]
