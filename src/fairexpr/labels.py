"""The canonical label space every dataset adapter maps into, once.

Labels always travel as indices into ``CANONICAL7`` (``anger, disgust, fear, happiness, sadness,
surprise, neutral``) or ``CANONICAL8`` (the same plus ``contempt``). Adapters translate their own
codes/folder names with :func:`canonical_name`.
"""
from __future__ import annotations

CANONICAL7: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
CANONICAL8: tuple[str, ...] = CANONICAL7 + ("contempt",)

#: spellings used by the published datasets -> canonical name
ALIASES: dict[str, str] = {
    "anger": "anger", "angry": "anger", "an": "anger",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "fe": "fear",
    "happiness": "happiness", "happy": "happiness", "joy": "happiness", "ha": "happiness",
    "sadness": "sadness", "sad": "sadness", "sa": "sadness",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise",
    "neutral": "neutral", "ne": "neutral", "calm": "neutral",
    "contempt": "contempt", "co": "contempt",
}


class LabelError(ValueError):
    """A label/class name that is not part of the canonical space."""


def canonical_name(name: str) -> str:
    """Map a dataset's class spelling (``"happy"``, ``"Angry"``, ``"SU"``) to its canonical name."""
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise LabelError(
            f"unknown expression class {name!r}; expected one of {sorted(set(ALIASES))} "
            f"(canonical: {', '.join(CANONICAL8)})"
        )
    return ALIASES[key]


def label_space(num_classes: int) -> tuple[str, ...]:
    """The canonical class tuple for 7 or 8 classes."""
    if num_classes == 7:
        return CANONICAL7
    if num_classes == 8:
        return CANONICAL8
    raise LabelError(f"canonical label space has 7 or 8 classes, got {num_classes}")


def class_index(name: str, classes: tuple[str, ...] = CANONICAL8) -> int:
    canon = canonical_name(name)
    if canon not in classes:
        raise LabelError(f"class {canon!r} is not in this label space {classes}")
    return classes.index(canon)
