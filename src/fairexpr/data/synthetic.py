"""Procedural facial-expression images: the built-in data for the demo and the unit tests.

Each image is a parametric face drawn with OpenCV on a supersampled canvas: head oval, optional hair,
brows, eyes (sclera + iris), nose, mouth and expression wrinkles. The eight canonical expressions are
*prototype displacements* of those parts (FACS-like action units, see :data:`PROTOTYPES`):

* anger: brows lowered and pulled together (AU4), glabella furrow, narrowed eyes, pressed lips
* disgust: nose wrinkle (AU9), raised upper lip (AU10), lowered brows, corners down
* fear: brows raised *and* drawn together (AU1+2+4), wide eyes, open, horizontally stretched mouth
* happiness: lip corners up (AU12), cheek raise / nasolabial folds (AU6), often teeth
* sadness: inner brows up (AU1), lip corners down (AU15)
* surprise: brows high (AU1+2), wide eyes, round open mouth (AU26/27), forehead lines
* neutral: no displacement
* contempt: one lip corner up (unilateral AU14)

Every sample draws a random *identity* (face width/height, feature spacing, skin tone, hair), an
expression *intensity* (weak expressions drift towards neutral, which keeps the task non-trivial),
per-part jitter, a *pose* (rotation, translation, scale), a lighting gradient, blur, noise and
(for some domains) an occluder. All randomness comes from ``numpy.random.default_rng`` seeded per
image with ``(seed, domain, split key, class, index)``, so generation is reproducible and the images
of one class do not depend on how many images of the other classes are requested.

:func:`generate` returns ``(images uint8 [N,H,W] | [N,H,W,C], labels int64 [N])``;
:func:`profile_counts` gives per-class counts that follow a real dataset's imbalance
(``'fer2013'``, ``'rafdb'``) or a balanced one; :data:`DOMAINS` holds the style presets
(``'default'``, ``'lab'``, ``'wild'``) that give cross-dataset demos a real domain gap;
:func:`write_folder` writes a generated set as a ``folder`` layout (``<split>/<class>/*.png``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from ..labels import CANONICAL7, CANONICAL8, canonical_name
from .base import DataError

__all__ = ["DomainStyle", "DOMAINS", "PROFILES", "PROTOTYPES", "generate", "profile_counts", "get_domain",
           "render_face", "with_overrides", "write_folder"]

# --------------------------------------------------------------------------------------------------------------------
# count profiles
# --------------------------------------------------------------------------------------------------------------------

#: Reference per-class counts of the named profiles (canonical class name -> train count).
PROFILES: dict[str, dict[str, int]] = {
    # FER2013 train split (Goodfellow et al. 2013), 28,709 images.
    "fer2013": {"anger": 3995, "disgust": 436, "fear": 4097, "happiness": 7215, "sadness": 4830,
                "surprise": 3171, "neutral": 4965},
    # RAF-DB basic train split (Li et al. 2017), 12,271 images.
    "rafdb": {"surprise": 1290, "fear": 281, "disgust": 717, "happiness": 4772, "sadness": 1982, "anger": 705,
              "neutral": 2524},
    # 1,000 per class for whichever classes are requested (contempt included).
    "balanced": {c: 1000 for c in CANONICAL8},
}


def _largest_remainder(weights: np.ndarray, total: int, minimum: np.ndarray) -> np.ndarray:
    """Integer counts proportional to ``weights`` summing to ``total`` (Hamilton's method), each >= ``minimum``."""
    w = weights / weights.sum()
    raw = w * total
    out = np.maximum(np.floor(raw).astype(np.int64), minimum)
    rest = total - int(out.sum())
    if rest > 0:
        order = np.argsort(-(raw - np.floor(raw)), kind="stable")
        order = order[weights[order] > 0]
        for i in range(rest):
            out[order[i % len(order)]] += 1
    while rest < 0:  # minimums overshot: take from the largest classes
        j = int(np.argmax(out - minimum))
        if out[j] <= minimum[j]:
            break
        out[j] -= 1
        rest += 1
    return out


def profile_counts(profile: str | Mapping[str, int] | Sequence[int], *, classes: Sequence[str] = CANONICAL7,
                   total: int | None = None, scale: float | None = None) -> np.ndarray:
    """Per-class counts (aligned with ``classes``) for a named profile, a ``{class: n}`` dict or a list.

    ``total`` rescales to exactly that many images (largest-remainder rounding); ``scale`` multiplies the
    reference counts (rounded). With either, every class the profile has (count > 0) keeps at least one
    image. Classes the profile lacks (e.g. contempt in ``'fer2013'``) get 0.
    """
    classes = tuple(canonical_name(c) for c in classes)
    if isinstance(profile, str):
        key = profile.strip().lower()
        if key not in PROFILES:
            raise DataError(f"synthetic: unknown count profile {profile!r}; expected one of {sorted(PROFILES)}")
        ref = np.array([PROFILES[key].get(c, 0) for c in classes], dtype=np.int64)
    elif isinstance(profile, Mapping):
        unknown = {canonical_name(k) for k in profile} - set(classes)
        if unknown:
            raise DataError(f"synthetic: counts given for classes {sorted(unknown)} not in classes {classes}")
        canon = {canonical_name(k): int(v) for k, v in profile.items()}
        ref = np.array([canon.get(c, 0) for c in classes], dtype=np.int64)
    else:
        ref = np.asarray(list(profile), dtype=np.int64)
        if ref.shape != (len(classes),):
            raise DataError(f"synthetic: per-class count list has {ref.size} entries; expected {len(classes)} "
                            f"(one per class of {classes})")
    if (ref < 0).any():
        raise DataError(f"synthetic: per-class counts must be >= 0, got {ref.tolist()}")
    if total is not None and scale is not None:
        raise DataError("synthetic: give either total (n) or scale, not both")
    if ref.sum() == 0:
        if total or scale:
            raise DataError(f"synthetic: profile {profile!r} has no images for classes {classes}")
        return ref
    minimum = (ref > 0).astype(np.int64)
    if total is not None:
        if int(total) < int(minimum.sum()):
            raise DataError(f"synthetic: n={total} is too small; need at least one image for each of "
                            f"{int(minimum.sum())} classes")
        return _largest_remainder(ref.astype(np.float64), int(total), minimum)
    if scale is not None:
        if scale <= 0:
            raise DataError(f"synthetic: scale must be > 0, got {scale}")
        return np.maximum(np.rint(ref * float(scale)).astype(np.int64), minimum)
    return ref


# --------------------------------------------------------------------------------------------------------------------
# domains (style presets)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainStyle:
    """Image-formation style of a synthetic "dataset". Ranges are ``(low, high)`` for a uniform draw.

    Brightness values are on 0..1; ``rotation_deg`` is the max absolute in-plane rotation, ``shift`` the max
    translation as a fraction of the image side, ``scale`` the face scale range.
    """

    name: str = "default"
    background: tuple[float, float] = (0.15, 0.75)
    skin: tuple[float, float] = (0.45, 0.85)
    contrast: tuple[float, float] = (0.8, 1.15)
    gamma: tuple[float, float] = (0.85, 1.2)
    rotation_deg: float = 10.0
    shift: float = 0.05
    scale: tuple[float, float] = (0.88, 1.05)
    yaw: float = 0.08  # horizontal offset of the features inside the head (fake out-of-plane turn)
    light_gradient: tuple[float, float] = (0.0, 0.35)
    blur_sigma: tuple[float, float] = (0.0, 0.8)
    noise_std: tuple[float, float] = (0.0, 0.04)
    occluder_prob: float = 0.05
    hair_prob: float = 0.6
    intensity: tuple[float, float] = (0.45, 1.2)
    jitter: float = 1.0  # scale of the per-part random jitter

    def __post_init__(self) -> None:
        for f in ("background", "skin", "contrast", "gamma", "scale", "light_gradient", "blur_sigma", "noise_std",
                  "intensity"):
            lo, hi = getattr(self, f)
            if hi < lo:
                raise DataError(f"DomainStyle.{f}: range ({lo}, {hi}) has high < low")
        if not 0.0 <= self.occluder_prob <= 1.0 or not 0.0 <= self.hair_prob <= 1.0:
            raise DataError("DomainStyle: occluder_prob and hair_prob must lie in [0, 1]")


#: Style presets. ``lab`` is posed, frontal, evenly lit and clean (CK+/JAFFE-like); ``wild`` is darker,
#: higher-contrast, rotated, blurred, noisy and sometimes occluded (FER2013/RAF-DB-like).
DOMAINS: dict[str, DomainStyle] = {
    "default": DomainStyle(),
    "lab": DomainStyle(name="lab", background=(0.55, 0.8), skin=(0.6, 0.85), contrast=(0.95, 1.05), gamma=(0.95, 1.05),
                       rotation_deg=3.0, shift=0.02, scale=(0.97, 1.02), yaw=0.015, light_gradient=(0.0, 0.08),
                       blur_sigma=(0.0, 0.3), noise_std=(0.0, 0.01), occluder_prob=0.0, hair_prob=0.3,
                       intensity=(0.6, 1.2), jitter=0.7),
    "wild": DomainStyle(name="wild", background=(0.0, 0.6), skin=(0.25, 0.8), contrast=(0.75, 1.4), gamma=(0.7, 1.5),
                        rotation_deg=18.0, shift=0.08, scale=(0.82, 1.1), yaw=0.12, light_gradient=(0.1, 0.6),
                        blur_sigma=(0.2, 1.1), noise_std=(0.02, 0.06), occluder_prob=0.25, hair_prob=0.8,
                        intensity=(0.25, 1.1), jitter=1.3),
}


def get_domain(domain: str | DomainStyle) -> DomainStyle:
    if isinstance(domain, DomainStyle):
        return domain
    key = str(domain).strip().lower()
    if key not in DOMAINS:
        raise DataError(f"synthetic: unknown domain {domain!r}; expected one of {sorted(DOMAINS)} or a DomainStyle")
    return DOMAINS[key]


# --------------------------------------------------------------------------------------------------------------------
# expression prototypes
# --------------------------------------------------------------------------------------------------------------------

#: Parameters of the face that expressions move. Units: fractions of the head half-height (y down is +).
PARAMS: tuple[str, ...] = (
    "brow_raise",     # + lifts both brows
    "brow_inner",     # + lifts the inner ends relative to the outer ends (sad/fear); - lowers them (anger)
    "brow_squeeze",   # + pulls the brows towards the midline
    "eye_open",       # added to 1.0: relative eye opening
    "mouth_open",     # jaw drop (inner mouth height)
    "mouth_width",    # added to 1.0: relative mouth width
    "mouth_curve",    # + corners up (smile), - corners down
    "mouth_asym",     # + right corner up, left unchanged (contempt)
    "upper_lip",      # + raises the upper lip (disgust)
    "nose_wrinkle",   # 0..1 wrinkle lines on the nose bridge
    "cheek",          # 0..1 cheek raise / nasolabial folds
    "forehead",       # 0..1 horizontal forehead lines
    "furrow",         # 0..1 vertical lines between the brows
    "teeth",          # 0..1 probability-like: show teeth when the mouth is open
)

#: Class prototypes (displacements from neutral at intensity 1).
PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "anger": {"brow_raise": -0.06, "brow_inner": -0.09, "brow_squeeze": 0.05, "eye_open": -0.25,
              "mouth_width": -0.2, "mouth_curve": -0.02, "furrow": 1.0},
    "disgust": {"brow_raise": -0.04, "brow_inner": -0.03, "brow_squeeze": 0.02, "eye_open": -0.35,
                "upper_lip": 0.06, "mouth_open": 0.03, "mouth_curve": -0.045, "nose_wrinkle": 1.0, "cheek": 0.4},
    "fear": {"brow_raise": 0.08, "brow_inner": 0.05, "brow_squeeze": 0.04, "eye_open": 0.5, "mouth_open": 0.08,
             "mouth_width": 0.2, "mouth_curve": -0.025, "forehead": 0.6, "teeth": 0.6},
    "happiness": {"eye_open": -0.2, "mouth_width": 0.25, "mouth_curve": 0.09, "mouth_open": 0.035, "cheek": 1.0,
                  "teeth": 0.8},
    "sadness": {"brow_raise": 0.01, "brow_inner": 0.08, "eye_open": -0.15, "mouth_width": -0.05,
                "mouth_curve": -0.07, "upper_lip": -0.01},
    "surprise": {"brow_raise": 0.14, "eye_open": 0.6, "mouth_open": 0.17, "mouth_width": -0.3, "forehead": 1.0,
                 "teeth": 0.2},
    "contempt": {"mouth_asym": 0.075, "eye_open": -0.1, "brow_raise": 0.01, "mouth_width": 0.05},
}

#: Jitter (std at DomainStyle.jitter = 1) added to every parameter of every sample, in parameter units.
JITTER: dict[str, float] = {
    "brow_raise": 0.025, "brow_inner": 0.03, "brow_squeeze": 0.015, "eye_open": 0.15, "mouth_open": 0.015,
    "mouth_width": 0.08, "mouth_curve": 0.025, "mouth_asym": 0.02, "upper_lip": 0.015, "nose_wrinkle": 0.2,
    "cheek": 0.2, "forehead": 0.2, "furrow": 0.2, "teeth": 0.0,
}

_SUPERSAMPLE = 3
_SHIFT = 4  # fixed-point bits for cv2 drawing
_FP = 1 << _SHIFT


def _expression_params(name: str, intensity: float, rng: np.random.Generator, jitter: float) -> dict[str, float]:
    proto = PROTOTYPES[name]
    p = {k: proto.get(k, 0.0) * intensity + rng.normal(0.0, JITTER[k] * jitter) for k in PARAMS}
    if name == "contempt" and rng.random() < 0.5:  # either side
        p["mouth_asym"] = -p["mouth_asym"]
    p["teeth"] = float(rng.random() < proto.get("teeth", 0.0))
    for k in ("nose_wrinkle", "cheek", "forehead", "furrow"):
        p[k] = float(np.clip(p[k], 0.0, 1.0))
    p["mouth_open"] = max(0.0, p["mouth_open"])
    return p


# --------------------------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------------------------


class _Canvas:
    """Float canvas (H, W, 3) drawn in face coordinates: x, y in [-1, 1] span the image (y down).

    The head pose is applied while drawing (no resampling): a point ``p`` lands at ``s R(a) p + t``;
    ellipses get their axes scaled by ``s`` and their angle increased by ``a``.
    """

    def __init__(self, side: int, bg: np.ndarray, angle_deg: float = 0.0, scale: float = 1.0,
                 shift: tuple[float, float] = (0.0, 0.0)) -> None:
        self.side = side
        self.img = np.empty((side, side, 3), np.float32)
        self.img[:] = bg
        a = np.deg2rad(angle_deg)
        self.angle = float(angle_deg)
        self.scale = float(scale)
        self.A = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        self.t = np.asarray(shift, np.float64)

    def _map(self, pts: np.ndarray) -> np.ndarray:
        s = self.side / 2.0
        q = pts @ self.A.T + self.t
        return np.round((q * s + s) * _FP).astype(np.int32)

    def len(self, v: float) -> int:
        return max(1, int(round(v * self.scale * self.side / 2.0 * _FP)))

    def px(self, v: float) -> int:
        return max(1, int(round(v * self.scale * self.side / 2.0)))

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, color, angle: float = 0.0, thickness: int = -1,
                start: float = 0.0, end: float = 360.0) -> None:
        c = self._map(np.array([[cx, cy]], np.float64))[0]
        cv2.ellipse(self.img, (int(c[0]), int(c[1])), (self.len(ax), self.len(ay)), angle + self.angle, start, end,
                    _c(color), thickness if thickness < 0 else max(1, thickness), cv2.LINE_AA, _SHIFT)

    def poly(self, pts: np.ndarray, color, thickness: float = 0.0, closed: bool = False, fill: bool = False) -> None:
        q = self._map(np.asarray(pts, np.float64)).reshape(-1, 1, 2)
        if fill:
            cv2.fillPoly(self.img, [q], _c(color), cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(self.img, [q], closed, _c(color), self.px(thickness), cv2.LINE_AA, _SHIFT)


def _c(color) -> tuple[float, float, float]:
    if np.ndim(color) == 0:
        v = float(color)
        return v, v, v
    return float(color[0]), float(color[1]), float(color[2])


def _quad(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic Bezier through control ``p1`` from ``p0`` to ``p2``: B(t) = (1-t)^2 p0 + 2t(1-t) p1 + t^2 p2."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2


def render_face(expression: str, rng: np.random.Generator, *, size: int = 48, channels: int = 1,
                domain: str | DomainStyle = "default") -> np.ndarray:
    """Draw one face of ``expression`` (a canonical name) with randomness from ``rng``; uint8 [H,W] or [H,W,C]."""
    style = get_domain(domain)
    expression = canonical_name(expression)
    side = size * _SUPERSAMPLE

    # ---- identity & appearance --------------------------------------------------------------------------
    skin_l = rng.uniform(*style.skin)
    tint = np.array([1.0, 1.0 - rng.uniform(0.08, 0.18), 1.0 - rng.uniform(0.2, 0.35)])  # RGB, warm skin
    skin = np.clip(skin_l * tint, 0, 1)
    bg_l = rng.uniform(*style.background)
    bg = np.clip(bg_l * (1 + rng.normal(0, 0.15, 3)), 0, 1)
    dark = np.clip(skin * rng.uniform(0.25, 0.45), 0, 1)      # brows, nostrils, lines
    line = np.clip(skin * rng.uniform(0.55, 0.75), 0, 1)      # wrinkles, folds
    lip = np.clip(skin * np.array([rng.uniform(0.7, 0.9), 0.55, 0.55]), 0, 1)
    hair = np.clip(np.full(3, rng.uniform(0.02, 0.5)) * (1 + rng.normal(0, 0.1, 3)), 0, 1)

    hw = rng.uniform(0.56, 0.70)          # head half-width
    hh = rng.uniform(0.74, 0.86)          # head half-height
    cy0 = rng.uniform(0.02, 0.08)         # head centre y
    eye_dx = rng.uniform(0.22, 0.30)      # eye x offset from midline
    eye_y = cy0 + rng.uniform(-0.16, -0.08)
    eye_w = rng.uniform(0.085, 0.115)
    eye_h = rng.uniform(0.035, 0.05)
    brow_gap = rng.uniform(0.09, 0.14)    # eye centre -> brow
    brow_th = rng.uniform(0.025, 0.045)
    nose_y = cy0 + rng.uniform(0.12, 0.2)
    mouth_y = cy0 + rng.uniform(0.36, 0.44)
    mouth_hw = rng.uniform(0.15, 0.2)
    lip_th = rng.uniform(0.018, 0.03)
    yaw = rng.uniform(-style.yaw, style.yaw)

    p = _expression_params(expression, rng.uniform(*style.intensity), rng, style.jitter)

    # pose: in-plane rotation, scale, translation (applied while drawing)
    ang = rng.uniform(-style.rotation_deg, style.rotation_deg)
    sc = rng.uniform(*style.scale)
    shift = rng.uniform(-style.shift, style.shift, 2) * 2.0
    cv = _Canvas(side, bg, ang, sc, (float(shift[0]), float(shift[1])))
    # ---- hair & head ---------------------------------------------------------------------------------------
    if rng.random() < style.hair_prob:
        cv.ellipse(0.0, cy0 - hh * 0.12, hw * 1.1, hh * 1.0, hair, start=180, end=360)
        cv.ellipse(0.0, cy0 - hh * 0.12, hw * 1.1, hh * 0.35, hair)
    cv.ellipse(0.0, cy0, hw, hh, skin)
    cv.ellipse(-hw, eye_y + 0.12, 0.06, 0.12, skin * 0.95)  # ears
    cv.ellipse(hw, eye_y + 0.12, 0.06, 0.12, skin * 0.95)

    fx = yaw  # features shift sideways with the fake head turn

    # ---- cheeks (happiness raise, disgust) -------------------------------------------------------------
    if p["cheek"] > 0.05:
        a = p["cheek"]
        for sgn in (-1, 1):
            x0 = fx + sgn * (mouth_hw * 0.55 + 0.05)
            fold = _quad((fx + sgn * 0.1, nose_y - 0.02), (x0 + sgn * 0.12, mouth_y - 0.12),
                         (fx + sgn * (mouth_hw * (1 + p["mouth_width"]) + 0.04), mouth_y + 0.02))
            cv.poly(fold, skin + (line - skin) * a, thickness=0.012 + 0.012 * a)
            cv.ellipse(fx + sgn * (eye_dx + 0.03), eye_y + 0.2, 0.11, 0.06 * a + 0.01,
                       np.clip(skin * (1 + 0.12 * a), 0, 1))

    # ---- eyes ------------------------------------------------------------------------------------------
    open_ = float(np.clip(1.0 + p["eye_open"], 0.25, 2.2))
    iris = np.clip(np.full(3, rng.uniform(0.05, 0.35)), 0, 1)
    sclera = np.clip(np.full(3, rng.uniform(0.8, 0.97)), 0, 1)
    gaze = rng.normal(0.0, 0.012, 2)
    for sgn in (-1, 1):
        ex = fx + sgn * eye_dx
        h = eye_h * open_
        cv.ellipse(ex, eye_y, eye_w, h, sclera)
        cv.ellipse(ex + gaze[0], eye_y + gaze[1], min(eye_h * 1.1, eye_w * 0.6), min(eye_h * 1.1, h), iris)
        cv.ellipse(ex, eye_y, eye_w, h, dark, thickness=max(1, cv.px(0.012)))
        # lid over the iris when the eye is narrowed
        if open_ < 1.0:
            cv.ellipse(ex, eye_y - h * 1.05, eye_w * 1.05, eye_h * (1.0 - open_) * 0.9 + 1e-3, skin)

    # ---- brows -----------------------------------------------------------------------------------------
    for sgn in (-1, 1):
        inner_x = fx + sgn * max(0.05, eye_dx - eye_w * 0.9 - 0.02 - p["brow_squeeze"])
        outer_x = fx + sgn * (eye_dx + eye_w * 1.15)
        base = eye_y - brow_gap - p["brow_raise"]
        inner_y = base - p["brow_inner"]
        outer_y = base + 0.01 + (p["brow_inner"] * 0.3)
        mid = ((inner_x + outer_x) / 2, min(inner_y, outer_y) - 0.03 - 0.15 * max(p["brow_raise"], 0))
        cv.poly(_quad((inner_x, inner_y), mid, (outer_x, outer_y)), dark, thickness=brow_th)

    # ---- forehead lines & furrow ------------------------------------------------------------------------
    if p["forehead"] > 0.1:
        for k in range(3):
            y = eye_y - brow_gap - 0.12 - 0.06 * k - p["brow_raise"] * 0.5
            cv.poly(_quad((fx - 0.25, y + 0.01), (fx, y - 0.02), (fx + 0.25, y + 0.01)),
                    skin + (line - skin) * p["forehead"], thickness=0.01)
    if p["furrow"] > 0.1:
        for sgn in (-1, 1):
            x = fx + sgn * 0.03
            cv.poly(np.array([[x, eye_y - brow_gap - 0.08], [x + sgn * 0.01, eye_y - brow_gap + 0.04]]),
                    skin + (dark - skin) * 0.8 * p["furrow"], thickness=0.012)

    # ---- nose ------------------------------------------------------------------------------------------
    nw = rng.uniform(0.06, 0.09)
    cv.poly(_quad((fx - 0.02, eye_y + 0.02), (fx - 0.05, (eye_y + nose_y) / 2), (fx - nw * 0.6, nose_y)),
            skin + (line - skin) * 0.6, thickness=0.012)
    for sgn in (-1, 1):
        cv.ellipse(fx + sgn * nw * 0.5, nose_y + 0.015 - p["upper_lip"] * 0.3, 0.022, 0.012, dark)
    if p["nose_wrinkle"] > 0.1:
        for k in range(3):
            y = eye_y + 0.01 + 0.035 * k
            cv.poly(np.array([[fx - 0.05, y + 0.01], [fx, y], [fx + 0.05, y + 0.01]]),
                    skin + (dark - skin) * 0.7 * p["nose_wrinkle"], thickness=0.011)

    # ---- mouth -----------------------------------------------------------------------------------------
    mw = mouth_hw * float(np.clip(1.0 + p["mouth_width"], 0.45, 1.7))
    curve = p["mouth_curve"]
    # corner heights: the smile/frown curve moves both, the contempt asymmetry lifts one
    lcy = mouth_y - curve + min(p["mouth_asym"], 0.0)
    rcy = mouth_y - curve - max(p["mouth_asym"], 0.0)
    left, right = np.array([fx - mw, lcy]), np.array([fx + mw, rcy])
    mid_y = mouth_y + curve * 0.6 - p["upper_lip"]  # centre of the lip line
    opening = p["mouth_open"]
    if opening > 0.012:
        upper = _quad(left, (fx, mid_y - opening * 0.6 - curve * 0.6), right)
        lower = _quad(right, (fx, mid_y + opening * 1.8 + curve * 0.4 + p["upper_lip"]), left)
        cv.poly(np.vstack([upper, lower]), np.clip(dark * 0.5, 0, 1), fill=True)
        if p["teeth"] > 0.5:
            tooth = _quad(left, (fx, mid_y - opening * 0.5), right)
            cv.poly(tooth, np.clip(sclera * 0.95, 0, 1), thickness=min(opening * 0.9, 0.05))
        cv.poly(upper, lip, thickness=lip_th)
        cv.poly(lower, lip, thickness=lip_th * 1.2)
    else:
        line_pts = _quad(left, (fx, mid_y), right)
        cv.poly(line_pts, lip, thickness=lip_th * (0.6 if p["mouth_width"] < -0.1 else 1.0))
        cv.poly(line_pts, dark, thickness=0.008)

    # ---- occluder (hand / object / sunglasses) ---------------------------------------------------------
    if rng.random() < style.occluder_prob:
        kind = rng.integers(3)
        col = np.clip(np.full(3, rng.uniform(0.0, 1.0)), 0, 1)
        if kind == 0:  # sunglasses band
            cv.poly(np.array([[fx - eye_dx - eye_w * 1.4, eye_y], [fx + eye_dx + eye_w * 1.4, eye_y]]),
                    col * 0.3, thickness=eye_h * 4.0)
        elif kind == 1:  # object over the lower/side face
            cx, cy = rng.uniform(-0.7, 0.7), rng.uniform(0.2, 0.9)
            cv.ellipse(cx, cy, rng.uniform(0.15, 0.35), rng.uniform(0.15, 0.35), col, angle=rng.uniform(0, 180))
        else:  # hand from the side
            sgn = 1 if rng.random() < 0.5 else -1
            cv.ellipse(sgn * rng.uniform(0.55, 0.8), rng.uniform(0.1, 0.6), 0.3, 0.16, skin * rng.uniform(0.85, 1.1),
                       angle=rng.uniform(-40, 40))

    # ---- downsample (anti-aliasing), lighting, blur, noise ---------------------------------------------
    img = cv2.resize(cv.img, (size, size), interpolation=cv2.INTER_AREA)
    g = rng.uniform(*style.light_gradient)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    light = 1.0 + g * (np.cos(theta) * xx + np.sin(theta) * yy) * 2.0
    img = img * light[..., None]
    c = rng.uniform(*style.contrast)
    img = (img - 0.5) * c + 0.5 + rng.normal(0, 0.03)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(*style.gamma)
    sigma = rng.uniform(*style.blur_sigma)
    if sigma > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    ns = rng.uniform(*style.noise_std)
    if ns > 0:
        img = img + rng.normal(0.0, ns, img.shape).astype(np.float32)
    img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if channels == 3:
        return img
    raise DataError(f"synthetic: channels must be 1 or 3, got {channels}")


# --------------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------------


def _key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def generate(n_per_class: Mapping[str, int] | Sequence[int] | str = "balanced", size: int = 48, channels: int = 1,
             seed: int = 0, domain: str | DomainStyle = "default", classes: Sequence[str] = CANONICAL7, *,
             total: int | None = None, scale: float | None = None, split: str = "",
             shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Generate expressive faces.

    Args:
        n_per_class: ``{class: n}``, a list aligned with ``classes``, or a profile name
            (``'fer2013'``, ``'rafdb'``, ``'balanced'``; see :data:`PROFILES`), rescaled by ``total`` or ``scale``.
        size: image side in pixels (>= 16).
        channels: 1 (grayscale ``[N,H,W]``) or 3 (RGB ``[N,H,W,3]``).
        seed: base seed; the same arguments always give the same images.
        domain: a :data:`DOMAINS` name or a :class:`DomainStyle`.
        classes: canonical class names; labels index this tuple.
        split: extra seed key, so e.g. ``'train'`` and ``'test'`` of one seed never share an image.
        shuffle: shuffle the output order (seeded); otherwise images come grouped by class.

    Returns:
        ``(images uint8, labels int64)``.
    """
    classes = tuple(canonical_name(c) for c in classes)
    if len(set(classes)) != len(classes) or not classes:
        raise DataError(f"synthetic: classes must be distinct canonical names, got {classes}")
    if int(size) < 16:
        raise DataError(f"synthetic: size must be >= 16 pixels, got {size}")
    if channels not in (1, 3):
        raise DataError(f"synthetic: channels must be 1 or 3, got {channels}")
    style = get_domain(domain)
    counts = profile_counts(n_per_class, classes=classes, total=total, scale=scale)
    n = int(counts.sum())
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    images = np.empty(shape, np.uint8)
    labels = np.empty(n, np.int64)
    dkey, skey = _key(style.name), _key(split)
    i = 0
    for k, (cname, cnt) in enumerate(zip(classes, counts)):
        ckey = _key(cname)
        for j in range(int(cnt)):
            rng = np.random.default_rng([int(seed), dkey, skey, ckey, j])
            images[i] = render_face(cname, rng, size=size, channels=channels, domain=style)
            labels[i] = k
            i += 1
    if shuffle and n:
        perm = np.random.default_rng([int(seed), dkey, skey, 7]).permutation(n)
        images, labels = images[perm], labels[perm]
    return images, labels


def write_folder(root: str | Path, splits: Mapping[str, Mapping[str, int] | Sequence[int] | str] | None = None, *,
                 size: int = 48, channels: int = 1, seed: int = 0, domain: str | DomainStyle = "default",
                 classes: Sequence[str] = CANONICAL7, total: int | None = None,
                 scale: float | None = None) -> dict[str, np.ndarray]:
    """Write generated images as a ``folder`` layout ``root/<split>/<class>/<split>_<i>.png``.

    ``splits`` maps split name -> counts (as for :func:`generate`); default ``{'train': 'balanced' (20/class),
    'test': 'balanced' (10/class)}``. ``total``/``scale`` apply to every split given as a profile name.
    Returns the per-split class counts written (aligned with ``classes``).
    """
    from PIL import Image

    classes = tuple(canonical_name(c) for c in classes)
    if splits is None:
        splits = {"train": [20] * len(classes), "test": [10] * len(classes)}
    root = Path(root)
    written: dict[str, np.ndarray] = {}
    for split, spec in splits.items():
        imgs, labels = generate(spec, size=size, channels=channels, seed=seed, domain=domain, classes=classes,
                                total=total if isinstance(spec, str) else None,
                                scale=scale if isinstance(spec, str) else None, split=split, shuffle=False)
        for k in np.unique(labels).tolist():  # no folders for empty classes (the folder adapter rejects them)
            (root / split / classes[k]).mkdir(parents=True, exist_ok=True)
        for i, (im, y) in enumerate(zip(imgs, labels)):
            Image.fromarray(im).save(root / split / classes[int(y)] / f"{split}_{i:06d}.png")
        written[split] = np.bincount(labels, minlength=len(classes))
    return written


def with_overrides(domain: str | DomainStyle, **changes) -> DomainStyle:
    """A copy of a domain preset with some fields changed, e.g. ``with_overrides('lab', noise_std=(0, 0.1))``."""
    return replace(get_domain(domain), **changes)

