"""The finding judge of the counterfactual benchmark (docs/methods.md §7, issue 7): a MONAI
DenseNet that reads a frontal film and says, per finding, whether it is present and on
which side — trained on rendered films of the simulated world only, never on generated
ones, so that it cannot have learned the generator's habits.

Outputs (logits, :data:`LABELS`): one presence label per finding, then a left and a right
label per lateralised finding (bilateral = both). Side labels are known only for a film's
main finding; the loss ignores them elsewhere. Decisions are calibrated on held-out films
(Youden's J), never fixed: a threshold per finding on presence; per finding a threshold on
the *margin* left − right for a one-sided question (which side is it on?); a threshold
per side label for a bilateral one (is it on both?). See :meth:`Judge.present` for why the
margin. The penultimate features are the space of the benchmark's FID-style distance.

Data: ``medcf.models.data`` world sets — training seeds from :data:`TRAIN_SEED`, held-out
seeds from :data:`HELDOUT_SEED`, both apart from every other training and benchmark range.
Every rendered film is also seen as the bundle's autoencoder returns it (encode → decode:
same content and labels, the generator's softer look), and training augments that look
(blur, noise texture, contrast curves, over the whole film or a random patch of it), so
that the judge reads findings, not the renderer's sharpness: the first judge, trained on
sharp renders alone, called most films the model samples from the normal prompt
"consolidation" or "nodule" (issue 15). It still never sees a sampled film.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medcf.errors import InputError
from medcf.vocab import Finding, Side
from medcf.world.seeds import SeedRange

TRAIN_SEED = SeedRange.JUDGE_TRAIN.start
HELDOUT_SEED = SeedRange.PLAUSIBILITY.start
SIDED = [f for f in Finding if f is not Finding.CARDIOMEGALY]
LABELS = [f.value for f in Finding] + [f"{f.value}_{s}" for f in SIDED for s in ("left", "right")]
WEIGHTS_FILE = "judge.safetensors"
RECORD_FILE = "judge.json"


def network_definition() -> dict:
    """MONAI DenseNet sized for CPU training at 256² (about 0.43 M parameters). Three input
    channels: the film and its column and row coordinates (CoordConv). A pooled DenseNet
    forgets *where* a feature was; the first judge's side outputs for small lesions were
    worse than chance (consolidation-left 0.36, nodule-right 0.40), and the coordinates let
    the features carry the side."""
    return {"spatial_dims": 2, "in_channels": 3, "out_channels": len(LABELS), "init_features": 24,
            "growth_rate": 16, "block_config": [4, 6, 8, 6], "bn_size": 4}


LESION_MAP = "lesion_map"


def lesion_map_definition() -> dict:
    """The lesion-map judge (issue 16): the same DenseNet trunk, read at 32 × 32 cells rather
    than pooled. A nodule 12–32 mm across covers 9–23 px of a 256² film; averaged over the
    trunk's last 8 × 8 grid it is a trace, and the pooled judge found a moderate nodule no
    better than chance (AUC 0.46 on held-out renders, a severe one 0.71). Here every cell
    says whether each finding is there, trained on where the pair's two films differ (the
    world renders the same film with and without the finding, so the lesion's footprint is
    known exactly), and presence is a soft maximum over cells, sides the soft maximum over
    each half of the film (the patient's left is on the film's right)."""
    return {"kind": LESION_MAP, "trunk": network_definition(), "cells": 32, "head_features": 48,
            "sharpness": 5.0}


class LesionMapNet(torch.nn.Module):
    """A DenseNet trunk with a finding map head: ``maps(x)`` gives ``(B, findings, cells,
    cells)`` logits from the trunk's 32², 16² and 8² stages (upsampled and joined, as a
    feature pyramid does), ``forward(x)`` the judge's :data:`LABELS` logits pooled from them
    by log-mean-exp (``sharpness`` r: r → ∞ is the maximum, r → 0 the mean)."""

    def __init__(self, trunk: dict, cells: int = 32, head_features: int = 48, sharpness: float = 5.0) -> None:
        super().__init__()
        from monai.networks.nets import DenseNet

        self.trunk = DenseNet(**{**trunk, "out_channels": 1}).features
        self.cells, self.sharpness = cells, sharpness
        with torch.no_grad():
            taps = self._taps(torch.zeros(1, trunk["in_channels"], 8 * cells, 8 * cells))
        self.head = torch.nn.Sequential(
            torch.nn.Conv2d(sum(t.shape[1] for t in taps), head_features, 3, padding=1),
            torch.nn.BatchNorm2d(head_features), torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(head_features, len(Finding), 1))
        self.sided = [list(Finding).index(f) for f in SIDED]

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for name, layer in self.trunk.named_children():
            x = layer(x)
            if name in ("denseblock2", "denseblock3", "norm5"):
                taps.append(F.relu(x) if name == "norm5" else x)
        return taps

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's last stage, averaged: the space of the benchmark's FID-style distance."""
        return self._taps(x)[-1].mean(dim=(2, 3))

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        taps = self._taps(x)
        size = taps[0].shape[-2:]
        joined = torch.cat([taps[0], *(F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                                       for t in taps[1:])], dim=1)
        maps = self.head(joined)
        return maps if maps.shape[-1] == self.cells else F.adaptive_avg_pool2d(maps, self.cells)

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        """:data:`LABELS` logits from finding maps: presence over the whole film, then per
        sided finding its left (the film's right half) and right (left half) logits."""
        def soft_max(m: torch.Tensor) -> torch.Tensor:
            r = self.sharpness
            return (torch.logsumexp(r * m.flatten(2), dim=2) - np.log(m[0, 0].numel())) / r

        half = maps.shape[-1] // 2
        left, right = soft_max(maps[..., half:])[:, self.sided], soft_max(maps[..., :half])[:, self.sided]
        return torch.cat([soft_max(maps), torch.stack([left, right], dim=2).flatten(1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.maps(x))


NETWORKS = {"pooled": network_definition, "lesion-map": lesion_map_definition}  # `medcf train judge --network`


def build_network(definition: dict | None = None) -> torch.nn.Module:
    """The judge's network from its definition: MONAI DenseNet keyword arguments (the
    pooled judge), or ``{"kind": "lesion_map", ...}`` (:class:`LesionMapNet`)."""
    from monai.networks.nets import DenseNet

    definition = definition or network_definition()
    if definition.get("kind") == LESION_MAP:
        return LesionMapNet(**{k: v for k, v in definition.items() if k != "kind"})
    return DenseNet(**definition)


def labels_of(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Targets and a mask of known targets for one world-set record."""
    target = np.zeros(len(LABELS), np.float32)
    known = np.ones(len(LABELS), np.float32)
    present = set(record.get("background", []))
    if record["finding"] != "none":
        present.add(record["finding"])
    for finding in Finding:
        target[LABELS.index(finding.value)] = float(finding.value in present)
    for finding in SIDED:
        for side in ("left", "right"):
            index = LABELS.index(f"{finding.value}_{side}")
            if finding.value == record["finding"]:
                target[index] = float(record.get("side") in (side, Side.BILATERAL.value))
            elif finding.value in present:
                known[index] = 0.0  # a co-occurring finding's side is not recorded
    return target, known


def _features(network: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The DenseNet's pooled penultimate features (the space of the FID-style distance)."""
    if isinstance(network, LesionMapNet):
        return network.pooled_features(images)
    x = network.features(images)
    return network.class_layers[:-1](x)  # relu, pool, flatten


def _resized(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Films ``(N, 1, size, size)`` in [0, 1] from ``(H, W)``, ``(N, H, W)`` or ``(N, 1, H, W)``."""
    x = torch.as_tensor(np.asarray(images, np.float32))
    if x.ndim == 2:
        x = x[None]
    x = x[:, None] if x.ndim == 3 else x
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.25


def _with_coordinates(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``x`` (normalised films, one channel) with column and row coordinates in [−1, 1] as
    channels 2 and 3 when the network takes three channels (judges before them took one)."""
    if channels == 1:
        return x
    batch, _, height, width = x.shape
    columns = torch.linspace(-1, 1, width, dtype=x.dtype).view(1, 1, 1, width).expand(batch, 1, height, width)
    rows = torch.linspace(-1, 1, height, dtype=x.dtype).view(1, 1, height, 1).expand(batch, 1, height, width)
    return torch.cat([x, columns, rows], dim=1)


def _input_channels(network: torch.nn.Module) -> int:
    first = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d))
    return first.in_channels


def _prepare(images: np.ndarray | torch.Tensor, size: int, channels: int = 1) -> torch.Tensor:
    return _with_coordinates(_normalised(_resized(images, size)), channels)


@dataclass
class Judge:
    """A trained judge: network, input size and per-finding decision thresholds."""

    network: torch.nn.Module
    size: int = 256
    thresholds: dict[str, float] = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    side_margins: dict[str, float] = field(default_factory=dict)  # finding -> threshold on p_left − p_right
    side_thresholds: dict[str, float] = field(default_factory=dict)  # side label -> threshold (bilateral)

    @torch.no_grad()
    def probabilities(self, images, batch: int = 32) -> np.ndarray:
        """``(N, len(LABELS))`` probabilities for films ``(N, H, W)`` (or one ``(H, W)``) in [0, 1]."""
        self.network.eval()
        x = _prepare(images, self.size, _input_channels(self.network))
        return torch.cat([torch.sigmoid(self.network(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()

    @torch.no_grad()
    def features(self, images, batch: int = 32) -> np.ndarray:
        self.network.eval()
        x = _prepare(images, self.size, _input_channels(self.network))
        return torch.cat([_features(self.network, x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()

    def present(self, probabilities: np.ndarray, finding: Finding, side: Side | None = None) -> np.ndarray:
        """Decisions for ``finding`` (and, if given, on ``side``; bilateral = both sides).

        One side asked: the margin ``p_left − p_right`` against the finding's calibrated
        threshold (left at or above it, right below). The side heads learn only from films
        whose main finding is theirs, so their probabilities sit low and a fixed 0.5 on one
        head missed most sides: on held-out films it found the right side of a consolidation
        or a nodule in none, of a right pneumothorax in none; the margin finds 0.75, 0.62 and
        0.96 (issue 16). Both sides asked: each side head against its own threshold. A judge
        saved before the calibration (no ``side_margins``) keeps its fixed 0.5 per head, so
        that its old tables re-score as they were."""
        decision = probabilities[:, LABELS.index(finding.value)] >= self.thresholds.get(finding.value, 0.5)
        if side is None or finding is Finding.CARDIOMEGALY:
            return decision
        left = probabilities[:, LABELS.index(f"{finding.value}_left")]
        right = probabilities[:, LABELS.index(f"{finding.value}_right")]
        if side is not Side.BILATERAL and finding.value in self.side_margins:
            on_left = left - right >= self.side_margins[finding.value]
            return decision & (on_left if side is Side.LEFT else ~on_left)
        sides = ("left", "right") if side is Side.BILATERAL else (side.value,)
        for name, values in (("left", left), ("right", right)):
            if name in sides:
                decision &= values >= self.side_thresholds.get(f"{finding.value}_{name}", 0.5)
        return decision

    def save(self, folder: str | Path) -> list[Path]:
        from safetensors.torch import save_file

        from medcf.io.atomic import write_new_file, write_new_text

        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        weights = write_new_file(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        return [weights, write_new_text(folder / RECORD_FILE, json.dumps(self.full_record(), indent=2) + "\n")]

    def full_record(self) -> dict:
        """What ``judge.json`` holds: the training record and every calibrated decision."""
        return {**self.record, "labels": LABELS, "size": self.size, "thresholds": self.thresholds,
                "side_margins": self.side_margins, "side_thresholds": self.side_thresholds}

    @classmethod
    def load(cls, folder: str | Path) -> "Judge":
        from medcf.models.default import load_weights

        folder = Path(folder)
        path = folder / RECORD_FILE
        if not path.is_file():
            raise InputError(f"{folder} holds no finding judge ({RECORD_FILE} is missing; train one with "
                             "`medcf train judge`)")
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("labels") != LABELS:
            raise InputError(f"{path}: the judge was trained on other labels than this MedCF's")
        network = build_network(record.get("network"))
        load_weights(network, folder / WEIGHTS_FILE)
        return cls(network.eval(), int(record["size"]), record["thresholds"], record,
                   record.get("side_margins", {}), record.get("side_thresholds", {}))


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (MONAI's ``compute_roc_auc``: rank form, ties count half);
    NaN, silently, when only one class is present."""
    import warnings

    from monai.metrics import compute_roc_auc

    truth = np.asarray(truth).astype(bool)
    if truth.all() or not truth.any():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(compute_roc_auc(torch.as_tensor(np.asarray(scores, np.float64)), torch.as_tensor(truth)))


def youden_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity − 1."""
    truth = truth.astype(bool)
    best, chosen = -1.0, 0.5
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        j = predicted[truth].mean() + (~predicted[~truth]).mean() - 1 if truth.any() and (~truth).any() else 0
        if j > best:
            best, chosen = j, float(threshold)
    return chosen


def _rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 4)


def evaluate_judge(judge: Judge, images: np.ndarray, records: list[dict], fit: bool = True) -> dict:
    """AUC per finding and side label on held-out films; with ``fit`` sets ``judge.thresholds``
    and the side calibration (:func:`calibrate_sides`) from them, else reports the judge's."""
    probabilities = judge.probabilities(images)
    targets = np.stack([labels_of(r)[0] for r in records])
    known = np.stack([labels_of(r)[1] for r in records])
    report = {"n_images": len(images), "auc": {}, "threshold": {}}
    for index, name in enumerate(LABELS):
        use = known[:, index] > 0
        if name in {f.value for f in Finding}:
            report["auc"][name] = _rounded(auc(probabilities[use, index], targets[use, index]))
            if fit:
                judge.thresholds[name] = youden_threshold(probabilities[use, index], targets[use, index])
            report["threshold"][name] = round(judge.thresholds.get(name, 0.5), 4)
        else:  # side labels: among films whose main finding is this one
            finding = name.rsplit("_", 1)[0]
            main = np.array([r["finding"] == finding for r in records]) & use
            report["auc"][name] = _rounded(auc(probabilities[main, index], targets[main, index]))
    report.update(calibrate_sides(judge, probabilities, records, fit))
    return report


def calibrate_sides(judge: Judge, probabilities: np.ndarray, records: list[dict], fit: bool = True) -> dict:
    """Per sided finding, among held-out films whose main finding it is: the Youden threshold
    on ``p_left − p_right`` between left and right one-sided films (``judge.side_margins``),
    that margin's AUC and the balanced share of one-sided films it puts on their side; and
    per side label with both classes present, a Youden threshold for bilateral questions
    (``judge.side_thresholds``). A finding the world never draws one-sided (edema) gets no
    margin, a side label with one class no threshold: there is nothing to calibrate on.
    Without ``fit`` the judge's own calibration is reported, not changed."""
    report = {"side_margin": {}, "side_margin_auc": {}, "side_accuracy": {}}
    sides = np.array([r.get("side") for r in records], dtype=object)
    is_left = sides == Side.LEFT.value
    unilateral = np.isin(sides, [Side.LEFT.value, Side.RIGHT.value])
    for finding in SIDED:
        main = np.array([r["finding"] == finding.value for r in records])
        left = probabilities[:, LABELS.index(f"{finding.value}_left")]
        right = probabilities[:, LABELS.index(f"{finding.value}_right")]
        one_sided = main & unilateral
        if one_sided[is_left].any() and one_sided[~is_left].any():
            margin = (left - right)[one_sided]
            if fit:
                judge.side_margins[finding.value] = youden_threshold(margin, is_left[one_sided])
            threshold = judge.side_margins.get(finding.value)
            if threshold is not None:
                on_left, truth = margin >= threshold, is_left[one_sided]
                report["side_margin"][finding.value] = round(threshold, 4)
                report["side_margin_auc"][finding.value] = _rounded(auc(margin, truth))
                report["side_accuracy"][finding.value] = round(float((on_left[truth].mean()
                                                                      + (~on_left[~truth]).mean()) / 2), 4)
        for name, values in (("left", left), ("right", right)):
            truth = np.isin(sides[main], [name, Side.BILATERAL.value])
            if fit and truth.any() and (~truth).any():
                judge.side_thresholds[f"{finding.value}_{name}"] = youden_threshold(values[main], truth)
    return report


@dataclass
class JudgeOptions:
    out: Path
    n_pairs: int = 3000
    heldout_pairs: int = 300
    size: int = 256
    steps: int = 8000
    batch: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 250
    resume: bool = False
    max_minutes: float | None = None
    comorbidity: float = 0.3
    progress: bool = True
    data: Path | list[Path] | None = None  # world set .npz file(s) instead of the default rendered one
    heldout_data: Path | None = None
    network: dict | None = None  # default: network_definition()
    autoencoded: bool = True  # also train (and evaluate) on the films through the generator's autoencoder
    look: bool = True  # look augmentation (_look): blur, noise texture, contrast curves
    model: Path | None = None  # generator whose autoencoder gives the look (default: the bundle's)
    paired_batches: bool = False  # batches of whole pairs (a film and the same film without its finding)
    reports: bool = True  # after training: normal-sample false alarms and sham flips (medcf.eval.judge_report)


def _chance(batch: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(batch, 1, 1, 1, generator=generator) < p).float()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(B, 1, H, W)`` films (MONAI's separable ``GaussianFilter``)."""
    from monai.networks.layers import GaussianFilter

    return GaussianFilter(2, sigma)(x)


def _patch_weight(batch: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Per film 1 everywhere (half the films) or a smooth random patch (the other half):
    look changes happen to a whole film or to part of it, and neither is a finding."""
    field = torch.rand(batch, 1, 6, 6, generator=generator)
    field = F.interpolate(field, size=size, mode="bicubic", align_corners=False)
    patch = ((field - 0.6) / 0.15).clamp(0, 1)
    return torch.where(_chance(batch, 0.5, generator) > 0, torch.ones_like(patch), patch)


def _look(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augment the *look* of films ``(B, 1, H, W)`` in [0, 1] without touching their content:
    a contrast curve (gamma 0.75–1.35), a blur (σ 0.5–1.5 px) and a noise texture (σ up to
    0.03, slightly correlated), each on a random share of films, over the whole film or a
    random patch. These are the ways the generator's films differ from renders — and the
    ways a sham edit would try to pass for a finding."""
    batch, size = x.shape[0], tuple(x.shape[-2:])
    gamma = 0.75 + 0.6 * torch.rand(batch, 1, 1, 1, generator=generator)
    curved = x.clamp(0, 1) ** gamma
    x = x + _chance(batch, 0.5, generator) * _patch_weight(batch, size, generator) * (curved - x)
    sigma = float(0.5 + torch.rand(1, generator=generator))
    x = x + _chance(batch, 0.3, generator) * _patch_weight(batch, size, generator) * (_gaussian_blur(x, sigma) - x)
    texture = _gaussian_blur(torch.randn(x.shape, generator=generator), 0.7) * 1.6  # unit sd after the blur
    level = 0.03 * torch.rand(batch, 1, 1, 1, generator=generator)
    x = x + _chance(batch, 0.3, generator) * _patch_weight(batch, size, generator) * level * texture
    return x.clamp(0, 1)


def _augment(x: torch.Tensor, generator: torch.Generator,
             aligned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Brightness/contrast jitter and small shifts: the judge should read findings, not one
    renderer's exact grey levels. No flips: sides matter. ``aligned`` (maps of the same
    films, same size) is shifted with them."""
    batch = x.shape[0]
    gain = 1 + 0.15 * (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1)
    bias = 0.1 * (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1)
    shift = torch.randint(-8, 9, (2,), generator=generator)
    shifts = (int(shift[0]), int(shift[1]))
    return (torch.roll(x * gain + bias, shifts=shifts, dims=(2, 3)),
            None if aligned is None else torch.roll(aligned, shifts=shifts, dims=(2, 3)))


MAP_POSITIVE_WEIGHT = 4.0  # a nodule fills 1–8 of 1024 cells: its cells weigh more than the empty ones
FOOTPRINT_FLOOR = 0.004  # display units; the faintest nodule of world v2 peaks at ~0.02


def lesion_footprints(world) -> tuple[np.ndarray, np.ndarray]:
    """Where each factual film's main finding shows: ``(footprints (P, H, W) bool, row (N,))``,
    ``row[i]`` the footprint of film ``i`` or −1 (a counterfactual film, or a film without
    its pair). A world pair is one render with and without the finding — same anatomy,
    pose, exposure and noise — so the finding is exactly where the two differ: above 15 % of
    the pair's largest difference (scatter spreads a large lesion's change thinly across
    the film) and above :data:`FOOTPRINT_FLOOR`."""
    from medcf.models.data import pair_starts

    starts = pair_starts(world, needed_by="the lesion-map judge")
    row = np.full(len(world.records), -1, np.int64)
    footprints = np.zeros((len(starts), *world.images.shape[1:]), bool)
    for k, i in enumerate(starts):
        difference = np.abs(world.float_images([i])[0] - world.float_images([i + 1])[0])
        footprints[k] = difference > max(FOOTPRINT_FLOOR, 0.15 * float(difference.max()))
        row[i] = k
    return footprints, row


def _map_targets(footprint: torch.Tensor, records: list[dict], targets: np.ndarray,
                 cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell targets and a mask of known cells ``(B, findings, cells, cells)`` for a batch:
    a finding absent from a film is absent from every cell; a factual film's main finding
    is in the cells its (shifted) footprint touches; a co-occurring finding's cells are
    unknown (it is in both films of the pair, so the pair does not show where)."""
    batch, findings = len(records), len(Finding)
    where = F.adaptive_max_pool2d(footprint, cells)  # (B, 1, cells, cells)
    target = torch.zeros(batch, findings, cells, cells)
    known = torch.from_numpy(1.0 - targets[:, :findings]).float()[:, :, None, None].expand(-1, -1, cells, cells)
    known = known.clone()
    for b, record in enumerate(records):
        if record["finding"] != "none" and footprint[b].any():
            c = [f.value for f in Finding].index(record["finding"])
            target[b, c], known[b, c] = where[b, 0], 1.0
    return target, known


def _with_autoencoded(paths: list[Path], generator, progress: bool) -> list[Path]:
    from medcf.models.data import autoencoded_world_set

    return [*paths, *(autoencoded_world_set(path, generator, progress=progress) for path in paths)]


def evaluate_looks(judge: Judge, heldout: dict[str, Path]) -> dict[str, dict]:
    """AUC per label on each held-out set (``{report name: world set path}``); thresholds
    (Youden) on all of them together, since the judge is asked about both looks."""
    from medcf.models.data import WorldSet, load_world_set

    sets = {name: load_world_set(path) for name, path in heldout.items()}
    joined = WorldSet.join(list(sets.values()))
    evaluate_judge(judge, joined.float_images(), joined.records)  # sets judge's thresholds and side calibration
    return {name: evaluate_judge(judge, world.float_images(), world.records, fit=False)
            for name, world in sets.items()}


def train_judge(options: JudgeOptions) -> dict:
    """Train, checkpoint (resumable), evaluate on held-out films and save the judge into ``out``.

    Returns the held-out report on renders (``heldout_report``), and with ``autoencoded``
    the same on the autoencoded held-out films; with ``reports`` the judge's record also
    carries its normal-sample false alarms and sham flip rates."""
    from tqdm import tqdm

    from medcf.models.data import WorldSet, WorldSetSpec, load_world_set, pair_starts, render_world_set
    from medcf.models.train import RunFolder, _setup, hardware, load_checkpoint

    device = _setup(options.seed, options.threads)
    run = RunFolder(Path(options.out) / "run", options.resume)
    train_spec = WorldSetSpec(options.n_pairs, options.size, TRAIN_SEED, options.comorbidity)
    heldout_spec = WorldSetSpec(options.heldout_pairs, options.size, HELDOUT_SEED, options.comorbidity, "heldout")
    sources = options.data if isinstance(options.data, (list, tuple)) else [options.data] if options.data else []
    sources = [Path(path) for path in sources] or [render_world_set(train_spec, progress=options.progress)]
    generator = None
    if options.autoencoded or options.reports:
        from medcf.bundle import bundle_root
        from medcf.models.loaders import load_generator

        generator = load_generator(options.model or bundle_root())
    n_renders = len(sources)
    if options.autoencoded:
        sources = _with_autoencoded(sources, generator, options.progress)
    train = WorldSet.join([load_world_set(path) for path in sources])
    targets = np.stack([labels_of(r)[0] for r in train.records])
    known = np.stack([labels_of(r)[1] for r in train.records])
    definition = options.network or network_definition()
    lesion_map = definition.get("kind") == LESION_MAP
    paired = pair_starts(train, needed_by="paired batches") if options.paired_batches else None
    if lesion_map:  # footprints from the renders; an autoencoded copy shares its render's
        renders = WorldSet.join([load_world_set(path) for path in sources[:n_renders]])
        footprints, footprint_row = lesion_footprints(renders)
        footprint_row = np.tile(footprint_row, len(sources) // n_renders)
    network = build_network(definition).to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=1e-4)
    step = 0
    if options.resume:
        state = load_checkpoint(run.latest())
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
    train_source = [str(path) for path in sources]
    heldout_path = Path(options.heldout_data) if options.heldout_data else None
    heldout_source = str(heldout_path) if heldout_path else asdict(heldout_spec)
    run.write_recipe({"options": {k: str(v) for k, v in asdict(options).items()}, "network": definition,
                      "labels": LABELS, "train": train_source, "heldout": heldout_source, "hardware": hardware()})
    started = time.perf_counter()
    network.train()
    with tqdm(total=options.steps, initial=step, desc="judge", unit="step", disable=not options.progress) as bar:
        while step < options.steps:
            generator_ = torch.Generator().manual_seed(options.seed * 1_000_003 + step)  # batch s depends on (seed, s)
            if paired is None:
                index = torch.randint(0, len(train.images), (options.batch,), generator=generator_).numpy()
            else:  # both films of each drawn pair: the only difference in the batch is the finding
                drawn = paired[torch.randint(0, len(paired), (options.batch // 2,), generator=generator_).numpy()]
                index = np.stack([drawn, drawn + 1], axis=1).ravel()
            x = _resized(train.float_images(index), options.size)
            if options.look:
                x = _look(x, generator_)
            footprint = None
            if lesion_map:
                rows = footprint_row[index]
                empty = np.zeros(footprints.shape[1:], bool)
                footprint = _resized(np.stack([footprints[r] if r >= 0 else empty for r in rows]), options.size)
            x, footprint = _augment(_normalised(x), generator_, footprint)
            x = _with_coordinates(x, _input_channels(network)).to(device)
            y, m = torch.from_numpy(targets[index]).to(device), torch.from_numpy(known[index]).to(device)
            for group in optimiser.param_groups:
                group["lr"] = options.learning_rate * 0.5 * (1 + np.cos(np.pi * step / options.steps))
            maps = network.maps(x) if lesion_map else None
            logits = network(x) if maps is None else network.pool(maps)
            loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * m).sum() / m.sum()
            if maps is not None:  # and where: the cells the pair's footprint touches
                cell_y, cell_m = _map_targets(footprint, [train.records[i] for i in index], targets[index],
                                              network.cells)
                cell_loss = F.binary_cross_entropy_with_logits(maps, cell_y.to(device), reduction="none",
                                                               pos_weight=torch.tensor(MAP_POSITIVE_WEIGHT))
                loss = loss + (cell_loss * cell_m.to(device)).sum() / cell_m.sum().clamp(min=1)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            bar.update(1)
            if step % 50 == 0:
                run.log(step=step, loss=round(float(loss.detach()), 5))
            stop = options.max_minutes is not None and time.perf_counter() - started > 60 * options.max_minutes
            if step % options.checkpoint_every == 0 or step == options.steps or stop:
                run.save(step, {"network": network.state_dict(), "optimiser": optimiser.state_dict(), "step": step})
            if stop:
                return {"stopped_at": step, "resume": "run again with --resume"}
    judge = Judge(network.cpu().eval(), options.size)
    judge.record = {"network": definition, "steps": options.steps, "seed": options.seed,
                    "train": train_source, "heldout": heldout_source,
                    "train_seconds": round(time.perf_counter() - started, 1), "hardware": hardware(),
                    "recipe": {"autoencoded": options.autoencoded, "look_augmentation": options.look,
                               "paired_batches": options.paired_batches},
                    "notice": "trained on simulated radiographs only; a benchmark instrument, not a diagnostic"}
    return _calibrate_and_save(judge, heldout_path or render_world_set(heldout_spec, progress=options.progress),
                               generator if options.autoencoded else None, generator if options.reports else None,
                               Path(options.out) / "judge", options.progress)


def _calibrate_and_save(judge: Judge, heldout_path: Path, look_generator, report_generator, out: Path,
                        progress: bool) -> dict:
    """Calibrate ``judge`` on the held-out films (and, given ``look_generator``, on their
    autoencoded copies), add the field reports when ``report_generator`` is given, save it
    into the new folder ``out``; returns the held-out report on renders."""
    from medcf.io.atomic import new_output_dir

    heldout = {"heldout_report": heldout_path}
    if look_generator is not None:
        from medcf.models.data import autoencoded_world_set

        heldout["heldout_report_autoencoded"] = autoencoded_world_set(heldout_path, look_generator,
                                                                      progress=progress)
    reports = evaluate_looks(judge, heldout)
    judge.record.update(reports)
    if report_generator is not None:
        from medcf.eval.judge_report import judge_field_reports

        judge.record.update(judge_field_reports(judge, report_generator, progress=progress))
    judge.save(new_output_dir(out))
    return reports["heldout_report"]


def recalibrate_judge(folder: str | Path, out: str | Path, model: Path | None = None, reports: bool = True,
                      progress: bool = True) -> dict:
    """A trained judge's decisions calibrated anew, without training: the same weights, the
    held-out films its training run used (re-rendered from the recorded spec; a recorded
    file path is read as it is), thresholds, side calibration and field reports re-made,
    saved into the new folder ``out`` (``reports``: the field reports too, which sample and
    edit with the generator). For judges saved before a calibration existed (issue 16: the
    side margins); the training record (steps, seconds, data) is kept."""
    from medcf.bundle import bundle_root
    from medcf.io.atomic import new_output_dir
    from medcf.models.data import WorldSetSpec, render_world_set
    from medcf.models.loaders import load_generator

    judge = Judge.load(folder)
    new_output_dir(out)  # fail before the work, not after it
    judge.thresholds, judge.side_margins, judge.side_thresholds = {}, {}, {}
    heldout = judge.record.get("heldout")
    if isinstance(heldout, dict):
        heldout_path = render_world_set(WorldSetSpec(**heldout), progress=progress)
    elif isinstance(heldout, str) and Path(heldout).is_file():
        heldout_path = Path(heldout)
    else:
        raise InputError(f"{folder}: the judge's record names no held-out films that can be re-made ({heldout!r})")
    autoencoded = judge.record.get("recipe", {}).get("autoencoded", False)
    generator = load_generator(model or bundle_root()) if autoencoded or reports else None
    return _calibrate_and_save(judge, heldout_path, generator if autoencoded else None,
                               generator if reports else None, Path(out), progress)
