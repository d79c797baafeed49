"""The lesion bank: the world's findings, projected once, as the product reads them.

The lab (``medcf phantom lesion-bank``, :mod:`medcf.world.lesion_bank`) builds every
finding the world models inside its chest CT, for one canonical PA acquisition, and
stores per entry the projected water-equivalent line integral (``channel``), the 2D
``extent`` and the ``replaced`` share of aerated lung, each cropped to the entry's box;
once, the lesion-free line integral (``background``) and the projected anatomy (lungs,
heart) that placement registers onto a film. Why a bank and not the world itself: the
product never imports the lab, and a film edit must not pay for a CT and a projector.

The format is stated here, once, for the writer and the reader: a compressed ``.npz``
beside a JSON index (:data:`FORMAT`) that records the CT, the geometry, the seeds and the
``.npz``'s SHA-256, which :meth:`LesionBank.load` checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcf.errors import InputError
from medcf.io.atomic import sha256_of_file
from medcf.vocab import ANATOMY_BITS, Finding, Lobe, Organ, Severity, Side, Zone

FORMAT = "medcf.lesion-bank/1"
BANK_FILE = "lesion_bank.npz"
INDEX_FILE = "lesion_bank.json"
REPLACED_LEVELS = 255  # ``replaced`` is stored as uint8: 0..1 in 1/255 steps


def default_bank_path() -> Path:
    """The bank shipped inside the package (``medcf/insertion/data/lesion_bank.npz``)."""
    return Path(__file__).resolve().parent / "data" / BANK_FILE


def index_path(bank: Path) -> Path:
    return Path(bank).with_name(Path(bank).name.replace(".npz", ".json"))


@dataclass(frozen=True)
class BankEntry:
    """One rendered lesion: what it is, which seed drew it, where its crop lies (rows
    ``r0:r1``, columns ``c0:c1`` of the bank's grid)."""

    key: int
    finding: Finding
    side: Side | None
    zone: Zone | None
    lobe: Lobe | None
    severity: Severity
    seed: int
    bbox: tuple[int, int, int, int]

    @classmethod
    def from_dict(cls, data: dict) -> "BankEntry":
        def parse(kind, value):
            return None if value is None else kind(value)

        return cls(int(data["key"]), Finding(data["finding"]), parse(Side, data["side"]), parse(Zone, data["zone"]),
                   parse(Lobe, data.get("lobe")), Severity(data["severity"]), int(data["seed"]),
                   tuple(int(v) for v in data["bbox"]))

    def to_dict(self) -> dict:
        return {"key": self.key, "finding": self.finding.value, "side": self.side and self.side.value,
                "zone": self.zone and self.zone.value, "lobe": self.lobe and self.lobe.value,
                "severity": self.severity.value, "seed": self.seed, "bbox": list(self.bbox)}

    def describe(self) -> str:
        where = self.lobe.value if self.lobe else " ".join(v.value for v in (self.side, self.zone) if v)
        return f"{self.severity.value} {self.finding.value} ({where or 'no side'}), seed {self.seed}"


@dataclass(frozen=True)
class BankLesion:
    """One entry's arrays on its crop: ``channel`` (water mm), ``extent`` (bool, with the
    blending margin), ``replaced`` (0..1)."""

    entry: BankEntry
    channel: np.ndarray
    extent: np.ndarray
    replaced: np.ndarray


def entry_arrays(key: int) -> tuple[str, str, str]:
    """The ``.npz`` names of one entry's arrays."""
    return f"e{key}_channel", f"e{key}_extent", f"e{key}_replaced"


class LesionBank:
    """A lesion bank read from its ``.npz`` and JSON index (the index's SHA-256 checked)."""

    def __init__(self, path: Path, index: dict, arrays: dict[str, np.ndarray]):
        self.path, self.index, self._arrays = Path(path), index, arrays
        self.entries = [BankEntry.from_dict(e) for e in index["entries"]]
        self.background = arrays["background"].astype(np.float32)
        self.anatomy = arrays["anatomy"]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "LesionBank":
        path = Path(path) if path is not None else default_bank_path()
        index_file = index_path(path)
        if not path.is_file() or not index_file.is_file():
            raise InputError(f"no lesion bank at {path} (and its {index_file.name}); build one with "
                             "`medcf phantom lesion-bank --out DIR`")
        index = json.loads(index_file.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT:
            raise InputError(f"{index_file}: not a {FORMAT} index")
        digest = sha256_of_file(path)
        if digest != index.get("sha256"):
            raise InputError(f"{path}: SHA-256 {digest[:12]}… differs from its index's; rebuild the bank")
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
        return cls(path, index, arrays)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.background.shape)

    def organ(self, organ: Organ) -> np.ndarray:
        """The world's projected ``organ`` on the bank's grid (bool)."""
        return (self.anatomy & ANATOMY_BITS[organ.value]) > 0

    def candidates(self, finding: Finding, side: Side | None, zone: Zone | None,
                   severity: Severity) -> list[BankEntry]:
        """The zonal entries of one finding, side, zone and severity, by seed (a lobar
        consolidation is chosen by lobe, :meth:`lobar`)."""
        found = [e for e in self.entries if e.finding is finding and e.side is side and e.zone is zone
                 and e.severity is severity and e.lobe is None]
        return sorted(found, key=lambda e: e.seed)

    def choices(self, finding: Finding) -> list[str]:
        """The side/zone pairs the bank holds for ``finding``, in words (for one-line refusals)."""
        pairs = sorted({(e.side.value if e.side else "-", e.zone.value if e.zone else "-")
                        for e in self.entries if e.finding is finding and e.lobe is None})
        return [f"{side}/{zone}" for side, zone in pairs]

    def lesion(self, entry: BankEntry) -> BankLesion:
        channel, extent, replaced = (self._arrays[name] for name in entry_arrays(entry.key))
        return BankLesion(entry, channel.astype(np.float32), extent.astype(bool),
                          replaced.astype(np.float32) / REPLACED_LEVELS)

    def record(self) -> dict:
        """What ``edit.json`` says of the bank: its file, SHA-256, CT and geometry."""
        return {"file": self.path.name, "sha256": self.index["sha256"], "ct": self.index.get("ct"),
                "geometry": self.index.get("geometry"), "entries": len(self.entries)}
