"""Is the anatomy drawn on a film plausible? Rules from anatomy and the image, not from
the network's confidence.

Why: a real film once got confidence 0.96 with masks no radiologist would draw (lungs
running into the mediastinum and touching at the top, the heart shifted and
wedge-shaped). A network is sure of itself where it is wrong in ways it was never shown;
the rules below are what any frontal chest film must satisfy, whoever drew the masks (the
default network, a site's segmenter, or a user's own file given with ``medcf edit
--masks``). Each rule has a name (in the one-line refusal, ``anatomy.json`` and
``edit.json``), the values it measured, and a threshold in :data:`THRESHOLDS`. One rule,
``lung_outline``, compares the lungs' outline with a statistical shape model of real and
rendered chests (:mod:`medcf.anatomy.shape_model`); without torchxrayvision, where the real
outlines are read from, it is recorded as unavailable and the other rules run. A refusal
names the way on: a corrected segmentation given with ``--masks``.

Conventions (those of :mod:`medcf.anatomy.masks` and the readers): the display is
MONOCHROME2 sense, bright = dense, so aerated lung is dark; a frontal film (PA or AP) is
shown with the patient's right on the image's left, so the right lung lies at lower
columns. A mirrored film (or situs inversus) therefore fails ``lung_sides``, on purpose:
the editor's side words would land on the wrong side.

Every measure is a fraction (of the image, of the chest width, of a region's pixels), so
it does not depend on the matrix; the masks are looked at on a grid of at most
:data:`GRID` pixels along the longer side, which keeps the check fast on full-size films.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medcf.anatomy.masks import AnatomyMasks
from medcf.anatomy.shape_model import MAX_DISTANCE, ShapeModelStatus, load_shape_model
from medcf.errors import InputError
from medcf.vocab import Organ

GRID = 512
BANDS = 20  # levels at which lungs and mediastinum are compared (lungs_radiolucent)

# Thresholds. How they were chosen: every measure was computed on 160 held-out renders of
# the simulated world (80 patients, seeds 1 300 000-1 300 079, 90 PA and 70 AP, every
# finding at every severity, 512 x 512) three ways: with the default network's masks, with
# those masks cut at the heart border (as the NIfTI label map of `medcf segment` stores
# them, what `medcf edit --masks` reads back), and with the world's exact masks
# (`benchmarks/bench_plausibility.py`). Each bound lies beyond the most extreme of the 480
# (range in brackets) by a margin, wider where real films vary more than renders of one
# body (field of view, heart size): renders are never refused (0/160 each way).
THRESHOLDS: dict[str, float] = {
    # lung_sides: (left lung centre - right lung centre) / chest width, above  [0.435-0.519]
    "lung_sides_min": 0.0,
    # lung_regions: share of each lung in its largest region, at least  [1.00]
    "lung_main_region_min": 0.95,
    # lung_size: each lung's area / the image's  [0.096-0.311]
    "lung_area_min": 0.05,
    "lung_area_max": 0.40,
    # lung_shape: solidity (area / convex hull) [0.919-0.989], extent (area / box) [0.635-0.871]
    "lung_solidity_min": 0.85,
    "lung_extent_min": 0.50,
    # heart_size: the heart's area / the image's  [0.064-0.163, severe cardiomegaly included]
    "heart_area_min": 0.03,
    "heart_area_max": 0.25,
    # heart_shape: solidity [0.836-0.929]; ellipse fit, the area over that of the ellipse of
    # the same second moments [0.897-0.965]: 1 for an ellipse, 0.827 for any triangle (a
    # wedge), whatever its tilt. The bound lies halfway between a wedge and the renders.
    "heart_solidity_min": 0.75,
    "heart_ellipse_fit_min": 0.86,
    # heart_position: |heart centre - midline between the lungs| / chest width  [0.013-0.141]
    "heart_offset_max": 0.20,
    # mediastinal_gap: widest gap between the lungs in the upper zones / chest width  [0.049-0.310]
    "mediastinal_gap_min": 0.025,
    # lungs_radiolucent: share of lung pixels outside the heart darker than the median of the
    # mediastinum at their level  [0.911-0.994; uniform noise about 0.5, an inverted film
    # or a vertical gradient about 0]
    "lung_darker_share_min": 0.80,
    # The bounds below were set in issue 46 on 160 tuning renders (seeds 1 100 000-1 100 079,
    # 256 px) with the network's masks, the label map's and the world's, and, for the lungs,
    # on the 435 real two-lung outlines of V7 Labs (torchxrayvision); checked on 160
    # held-out renders (seeds 1 400 000-1 400 079) (benchmarks/bench_plausibility.py).
    # lung_bases: (right lung's lowest row - left's) / the lungs' height; renders [0.028-0.180],
    # real outlines [-0.284-0.196], 99.5th percentile 0.168 (the right dome is usually
    # higher; the world's whole projected right lung reaches lower behind the liver). The
    # upper bound is tight on purpose, a right lung drawn on into the liver is the failure
    # seen on a real film; a right lung run 20 % of the lungs' height further down scores
    # 0.22-0.25 on the test renders.
    "lung_base_offset_min": -0.35,
    "lung_base_offset_max": 0.21,
    # heart_in_mediastinum: heart centre's row down the lungs' height [0.495-0.607]; share of
    # the heart between the lungs' centres [0.648-0.951]
    "heart_level_min": 0.35,
    "heart_level_max": 0.90,
    "heart_between_centres_min": 0.45,
    # lung_outline: distance of the thoracic outline from the shape model (medcf.anatomy.shape_model)
    "lung_outline_distance_max": MAX_DISTANCE,
}

RULES: dict[str, str] = {
    "lung_sides": "the right lung lies on the image's left (PA/AP display)",
    "lung_regions": "each lung is one main connected region",
    "lung_size": "each lung covers a plausible share of the image",
    "lung_shape": "each lung is compact (solidity, extent)",
    "heart_size": "the heart covers a plausible share of the image",
    "heart_shape": "the heart is compact and rounded, not a wedge (solidity, ellipse fit)",
    "heart_position": "the heart lies between the lungs and crosses the midline between them",
    "mediastinal_gap": "the lungs do not touch in the upper zones",
    "lungs_radiolucent": "lung pixels are darker than the mediastinum",
    "lung_bases": "each lung ends at its own dome: neither runs below the diaphragm far beyond the other",
    "heart_in_mediastinum": "the heart lies low in the mediastinum, mostly between the lungs' centres",
    "lung_outline": "the lungs' outline is near the shape model of real and rendered chests",
}


class AnatomyImplausibleError(InputError):
    """The anatomy drawn on a film breaks one or more plausibility rules."""


@dataclass
class PlausibilityResult:
    """The verdict: ``passed``, the names of the ``failed`` rules (in :data:`RULES` order),
    every ``measured`` value, and a short reason per failed rule."""

    passed: bool
    failed: list[str]
    measured: dict[str, float]
    reasons: dict[str, str] = field(default_factory=dict)
    overridden: bool = False
    shape_model: dict[str, str] = field(default_factory=dict)  # status (ShapeModelStatus) and source or why not

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failed": list(self.failed), "overridden": self.overridden,
                "reasons": dict(self.reasons), "shape_model": dict(self.shape_model),
                "measured": {k: (None if isinstance(v, float) and math.isnan(v) else round(float(v), 4))
                             for k, v in self.measured.items()}}

    def summary(self) -> str:
        return "; ".join(f"{rule}: {self.reasons.get(rule, RULES[rule])}" for rule in self.failed)


def _grid(array: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(max(array.shape) / GRID))
    return array[::step, ::step]


def _props(mask: np.ndarray):
    from skimage.measure import label, regionprops

    labels = label(mask, connectivity=2)
    regions = regionprops(labels)
    if not regions:
        return None, 0.0
    largest = max(regions, key=lambda r: r.area)
    return largest, float(largest.area) / float(mask.sum())


def _largest(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label

    labels = label(mask, connectivity=2)
    if labels.max() <= 1:
        return labels > 0
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _nan() -> float:
    return float("nan")


def measure(masks: AnatomyMasks, image: np.ndarray) -> dict[str, float]:
    """Every value the rules look at (NaN where a value cannot be measured)."""
    from skimage.morphology import convex_hull_image

    right, left, heart = (_grid(masks.organs[o]) for o in (Organ.LUNG_RIGHT, Organ.LUNG_LEFT, Organ.HEART))
    pixels = _grid(np.asarray(image, np.float32))
    if pixels.shape != right.shape:
        raise InputError(f"masks of {masks.shape} do not fit an image of {tuple(np.asarray(image).shape)}")
    size = float(right.size)
    values: dict[str, float] = {}
    centres = {}
    for name, mask in (("lung_right", right), ("lung_left", left), ("heart", heart)):
        if name != "heart" and mask.any():
            # A lung stopped at the heart border (a label map paints the heart over the lungs,
            # hand-drawn lung fields stop there) is judged with the heart inside its hull given
            # back: the heart may cut the left lung in two, which is no second lung.
            shape_mask = mask | (heart & convex_hull_image(mask))
            region, _ = _props(shape_mask)
            share = float((mask & _largest(shape_mask)).sum()) / float(mask.sum())
        else:
            region, share = _props(mask) if mask.any() else (None, 0.0)
        values[f"{name}_area"] = float(mask.sum()) / size
        values[f"{name}_main_region"] = share
        values[f"{name}_solidity"] = float(region.solidity) if region is not None else _nan()
        values[f"{name}_extent"] = float(region.extent) if region is not None else _nan()
        if name == "heart" and region is None:
            values["heart_ellipse_fit"] = _nan()
        elif name == "heart":
            # Area over that of the ellipse with the same second moments: 1 for any ellipse,
            # 0.955 for any parallelogram, 0.827 for any triangle (a wedge), at any tilt.
            ellipse = math.pi / 4 * region.axis_major_length * region.axis_minor_length if region is not None else 0
            values["heart_ellipse_fit"] = float(region.area) / ellipse if ellipse > 0 else _nan()
        centres[name] = float(np.nonzero(mask)[1].mean()) if mask.any() else _nan()
    lungs = right | left
    if not (right.any() and left.any() and heart.any()):
        for key in ("lung_sides", "heart_offset", "heart_crosses_midline", "heart_between_lungs", "mediastinal_gap",
                    "lung_darker_share", "lung_base_offset", "heart_level", "heart_between_centres"):
            values[key] = _nan()
        return values
    cols = np.flatnonzero(lungs.any(axis=0))
    chest_width = float(cols[-1] - cols[0] + 1)
    # > 0: the right lung on the image's left
    values["lung_sides"] = (centres["lung_left"] - centres["lung_right"]) / chest_width
    # Sides aside (lung_sides judges them), the lung on the image's left and the one on its right:
    first, second = (right, left) if values["lung_sides"] > 0 else (left, right)
    # The midline between the lungs: halfway between the medial edges, row by row, over the
    # rows both lungs share (robust to one lung being larger than the other).
    shared = np.flatnonzero(first.any(axis=1) & second.any(axis=1))
    if shared.size:
        inner_first = np.array([np.flatnonzero(first[r])[-1] for r in shared])
        inner_second = np.array([np.flatnonzero(second[r])[0] for r in shared])
        midline = float(np.median((inner_first + inner_second) / 2.0))
        # Upper zones: the top third of the rows both lungs share.
        upper = slice(0, max(1, math.ceil(shared.size / 3)))
        # The widest gap there: whole projected lungs may meet lower down (behind the
        # mediastinum, the junction lines), but lungs fused over the whole upper zone are not
        # lungs on either side of a trachea and great vessels.
        values["mediastinal_gap"] = float((inner_second[upper] - inner_first[upper] - 1).max()) / chest_width
    else:
        midline = (centres["lung_right"] + centres["lung_left"]) / 2.0
        values["mediastinal_gap"] = _nan()
    # The diaphragm: each lung ends at its own dome, the right one (under it the liver) no
    # lower than the left by much. A lung drawn on into the liver or the stomach moves its
    # base far below the other's. Rows of the lowest pixel, over the lungs' height.
    rows = np.flatnonzero(lungs.any(axis=1))
    height = float(rows[-1] - rows[0] + 1)
    values["lung_base_offset"] = (float(np.flatnonzero(right.any(axis=1))[-1])
                                  - float(np.flatnonzero(left.any(axis=1))[-1])) / height
    # The mediastinum, from the masks: the space between the lungs. The heart lies low in it
    # (it sits on the diaphragm: its centre in the lower half of the lungs' height) and
    # mostly between the lungs' centres (its apex reaches into the left lung's shadow).
    heart_rows, heart_cols_all = np.nonzero(heart)
    values["heart_level"] = (float(heart_rows.mean()) - rows[0]) / height
    low_c, high_c = sorted((centres["lung_right"], centres["lung_left"]))
    values["heart_between_centres"] = float(((heart_cols_all >= low_c) & (heart_cols_all <= high_c)).mean())
    heart_cols = np.flatnonzero(heart.any(axis=0))
    values["heart_offset"] = abs(centres["heart"] - midline) / chest_width
    values["heart_crosses_midline"] = float(heart_cols[0] < midline < heart_cols[-1])
    values["heart_between_lungs"] = float(min(centres["lung_right"], centres["lung_left"]) < centres["heart"]
                                          < max(centres["lung_right"], centres["lung_left"]))
    # The mediastinum: what lies between the lungs' centres, within their height, and is no lung.
    band = np.zeros_like(lungs)
    low, high = sorted((centres["lung_right"], centres["lung_left"]))
    band[rows[0]:rows[-1] + 1, math.ceil(low):math.floor(high) + 1] = True
    mediastinum = band & ~lungs
    aerated = lungs & ~heart
    # Compared level by level (bands of 1/BANDS of the lungs' height), so that a film
    # brighter at the bottom than at the top, or any vertical gradient, proves nothing.
    darker, counted = 0, 0
    edges = np.linspace(rows[0], rows[-1] + 1, BANDS + 1).round().astype(int)
    for start, stop in zip(edges[:-1], edges[1:]):
        inside = pixels[start:stop][mediastinum[start:stop]]
        lung = pixels[start:stop][aerated[start:stop]]
        if inside.size >= 10 and lung.size:
            darker += int((lung < np.median(inside)).sum())
            counted += lung.size
    values["lung_darker_share"] = darker / counted if counted >= 0.2 * aerated.sum() > 0 else _nan()
    return values


def _below(value: float, bound: float) -> bool:
    return not (value >= bound)  # NaN fails


def check_anatomy(masks: AnatomyMasks, image: np.ndarray) -> PlausibilityResult:
    """Apply every rule of :data:`RULES` to ``masks`` drawn on the display ``image``."""
    t = THRESHOLDS
    m = measure(masks, image)
    reasons: dict[str, str] = {}
    lungs = ("lung_right", "lung_left")

    if not m["lung_sides"] > t["lung_sides_min"]:
        reasons["lung_sides"] = "the right lung lies on the image's right (mirrored film?)"
    bad = [f"{n} {m[f'{n}_main_region']:.2f}" for n in lungs if _below(m[f"{n}_main_region"], t["lung_main_region_min"])]
    if bad:
        reasons["lung_regions"] = f"largest region holds < {t['lung_main_region_min']:.2f} of the lung ({', '.join(bad)})"
    bad = [f"{n} {m[f'{n}_area']:.3f}" for n in lungs
           if not t["lung_area_min"] <= m[f"{n}_area"] <= t["lung_area_max"]]
    if bad:
        reasons["lung_size"] = (f"area outside {t['lung_area_min']:.2f}-{t['lung_area_max']:.2f} of the image "
                                f"({', '.join(bad)})")
    bad = [f"{n} solidity {m[f'{n}_solidity']:.2f} extent {m[f'{n}_extent']:.2f}" for n in lungs
           if _below(m[f"{n}_solidity"], t["lung_solidity_min"]) or _below(m[f"{n}_extent"], t["lung_extent_min"])]
    if bad:
        reasons["lung_shape"] = (f"solidity < {t['lung_solidity_min']:.2f} or extent < {t['lung_extent_min']:.2f} "
                                 f"({', '.join(bad)})")
    if not t["heart_area_min"] <= m["heart_area"] <= t["heart_area_max"]:
        reasons["heart_size"] = (f"area {m['heart_area']:.3f} outside {t['heart_area_min']:.3f}-"
                                 f"{t['heart_area_max']:.2f} of the image")
    if _below(m["heart_solidity"], t["heart_solidity_min"]) or _below(m["heart_ellipse_fit"], t["heart_ellipse_fit_min"]):
        reasons["heart_shape"] = (f"solidity {m['heart_solidity']:.2f} (min {t['heart_solidity_min']:.2f}), "
                                  f"ellipse fit {m['heart_ellipse_fit']:.2f} (min {t['heart_ellipse_fit_min']:.2f}; "
                                  "a wedge has 0.83)")
    if not (m.get("heart_between_lungs") == 1.0 and m["heart_crosses_midline"] == 1.0
            and m["heart_offset"] <= t["heart_offset_max"]):
        reasons["heart_position"] = (f"centre {m['heart_offset']:.2f} of the chest width from the midline "
                                     f"(max {t['heart_offset_max']:.2f}), "
                                     + ("crosses" if m["heart_crosses_midline"] == 1.0 else "does not cross")
                                     + " it, " + ("between" if m.get("heart_between_lungs") == 1.0 else "not between")
                                     + " the lungs")
    if _below(m["mediastinal_gap"], t["mediastinal_gap_min"]):
        reasons["mediastinal_gap"] = (f"widest upper-zone gap {m['mediastinal_gap']:.3f} of the chest width "
                                      f"(min {t['mediastinal_gap_min']:.2f})")
    if _below(m["lung_darker_share"], t["lung_darker_share_min"]):
        reasons["lungs_radiolucent"] = (f"{m['lung_darker_share']:.2f} of lung pixels darker than the mediastinum "
                                        f"(min {t['lung_darker_share_min']:.2f} at the same level; inverted, or not a chest film?)")
    if not t["lung_base_offset_min"] <= m["lung_base_offset"] <= t["lung_base_offset_max"]:
        lower = "right" if m["lung_base_offset"] > 0 else "left"
        reasons["lung_bases"] = (f"the {lower} lung ends {abs(m['lung_base_offset']):.2f} of the lungs' height "
                                 f"below the other (bounds {t['lung_base_offset_min']:.2f} to {t['lung_base_offset_max']:.2f}: "
                                 "drawn across the diaphragm?)")
    if not (t["heart_level_min"] <= m["heart_level"] <= t["heart_level_max"]
            and m["heart_between_centres"] >= t["heart_between_centres_min"]):
        reasons["heart_in_mediastinum"] = (f"heart centre {m['heart_level']:.2f} down the lungs' height (bounds "
                                           f"{t['heart_level_min']:.2f}-{t['heart_level_max']:.2f}), "
                                           f"{m['heart_between_centres']:.2f} of it between the lungs' centres "
                                           f"(min {t['heart_between_centres_min']:.2f})")
    model, account = shape_model()
    if model is None:
        m["lung_outline_distance"] = _nan()
        shape = {"status": ShapeModelStatus.UNAVAILABLE.value, "why": account}
    else:
        from skimage.morphology import convex_hull_image

        lungs = _grid(masks.organs[Organ.LUNG_RIGHT]) | _grid(masks.organs[Organ.LUNG_LEFT])
        if lungs.any():
            # Lungs stopped at the heart border (a label map) get the heart inside their hull
            # back, as for lung_regions: where the heart covers a lung's whole width the row
            # would otherwise end at the other lung, and the outline would have a notch.
            lungs = lungs | (_grid(masks.organs[Organ.HEART]) & convex_hull_image(lungs))
        m["lung_outline_distance"] = model.distance(lungs) if lungs.any() else _nan()
        shape = {"status": ShapeModelStatus.CHECKED.value, "source": account}
        if not m["lung_outline_distance"] <= t["lung_outline_distance_max"]:
            reasons["lung_outline"] = (f"outline {m['lung_outline_distance']:.2f} from the shape model of "
                                       f"{model.counts['real']} real and {model.counts['world']} rendered chests "
                                       f"(max {t['lung_outline_distance_max']:.2f})")
    failed = [rule for rule in RULES if rule in reasons]
    return PlausibilityResult(not failed, failed, m, {rule: reasons[rule] for rule in failed}, shape_model=shape)


def shape_model():
    """The lung shape model, or ``(None, why)`` (:func:`medcf.anatomy.shape_model.load_shape_model`);
    one seam, so a test can take it away."""
    return load_shape_model()


def require_plausible(masks: AnatomyMasks, image: np.ndarray, source: str, accept: bool = False) -> PlausibilityResult:
    """:func:`check_anatomy`, raising :class:`AnatomyImplausibleError` (one line naming the
    failed rules) unless it passes or ``accept`` (``--accept-anatomy``) overrides it; the
    result then says it was overridden."""
    result = check_anatomy(masks, image)
    if not result.passed:
        if not accept:
            raise AnatomyImplausibleError(
                f"implausible anatomy on {source}: {result.summary()}; nothing written. Give a corrected "
                "segmentation with --masks (drawn or corrected in 3D Slicer or MONAI Label), or --accept-anatomy "
                "to go on anyway")
        result.overridden = True
    return result
