"""A model's input convention: ``medcf_convention.json`` beside its weights.

Why: a model trained on a public chest radiograph set learned that set's pixels, not
MedCF's display values. MIMIC-CXR-JPG was written with histogram equalisation; CheXpert's
JPEGs are 8-bit windowed. Fed plain display values, such a model sees an unfamiliar
contrast and its inversion and edits suffer. The file states the convention once, beside
the weights, and the editor follows it: it maps the input into the model's intensities
before encoding and maps the model's films back through the inverse before the change is
transferred to the native-resolution original — so outside the edit region the output is
still the input, bit for bit.

The file (every key optional; an unknown key is an error, so a typo is not silently ignored)::

    {
      "intensity": {"mapping": "equalize"},            // or "identity" (default), or
                   // {"mapping": "window8", "percentiles": [0.5, 99.5]}
      "image_size": [512, 512],                        // working size (default: the model's own)
      "prompt_template": "{view} {finding}",           // {view}: "PA chest radiograph."; {finding}:
                                                       // "Moderate left pleural effusion." or the normal phrase
      "normal_phrase": "No acute cardiopulmonary process.",
      "guidance_scale": 7.5,                           // default: the model's own
      "notes": "free text: where the convention comes from"
    }

- ``equalize``: histogram equalisation on the input's own histogram (256 bins), as
  MIMIC-CXR-JPG; the inverse is the input's quantile function.
- ``window8``: a linear window between two percentiles of the input, quantised to 8 bits,
  as CheXpert's JPEGs; the inverse is linear (values outside the window saturate: the
  model cannot change what its convention clips).
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medcf.errors import InputError
from medcf.models.package import CONVENTION_FILE
from medcf.text.prompts import NORMAL_PHRASE
MAPPINGS = ("identity", "equalize", "window8")
BINS = 256
_KEYS = {"intensity", "image_size", "prompt_template", "normal_phrase", "guidance_scale", "notes"}


@dataclass(frozen=True)
class IntensityMap:
    """One input's mapping display → model intensities (``forward``) and back (``inverse``),
    both monotone piecewise-linear through the knots ``xs`` (display) ↔ ``ys`` (model)."""

    kind: str
    xs: np.ndarray
    ys: np.ndarray
    levels: int = 0  # quantise the forward map to this many levels (8-bit JPEG conventions)

    def forward(self, image: np.ndarray) -> np.ndarray:
        if self.kind == "identity":
            return image
        mapped = np.interp(image, self.xs, self.ys)
        if self.levels:
            mapped = np.round(mapped * (self.levels - 1)) / (self.levels - 1)
        return mapped.astype(np.float32)

    def inverse(self, image: np.ndarray) -> np.ndarray:
        if self.kind == "identity":
            return image
        return np.interp(image, self.ys, self.xs).astype(np.float32)


@dataclass(frozen=True)
class Intensity:
    """The intensity part of a convention; :meth:`fit` makes the map for one input."""

    mapping: str = "identity"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def fit(self, display: np.ndarray) -> IntensityMap:
        """The map for ``display`` (the whole native input, float32 in [0, 1])."""
        if self.mapping == "identity":
            return IntensityMap("identity", np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        values = np.asarray(display, dtype=np.float64).ravel()
        if self.mapping == "equalize":
            counts, edges = np.histogram(np.clip(values, 0.0, 1.0), bins=BINS, range=(0.0, 1.0))
            cdf = np.concatenate([[0.0], np.cumsum(counts) / max(1, counts.sum())])
            ramp = np.linspace(0.0, 1.0, cdf.size)
            ys = (1 - 1e-6) * cdf + 1e-6 * ramp  # strictly increasing: empty bins keep an inverse
            return IntensityMap("equalize", edges, ys)
        low, high = np.percentile(values, self.percentiles)
        if high - low < 1e-6:
            raise InputError(f"the input has no contrast inside the convention's window (percentiles "
                             f"{self.percentiles[0]:g}-{self.percentiles[1]:g} are both {low:.4f})")
        return IntensityMap("window8", np.array([low, high]), np.array([0.0, 1.0]), levels=256)


@dataclass(frozen=True)
class Convention:
    """What ``medcf_convention.json`` says (module docstring); ``source`` is the file read."""

    intensity: Intensity = field(default_factory=Intensity)
    image_size: tuple[int, int] | None = None
    prompt_template: str = "{view} {finding}"
    normal_phrase: str | None = None
    guidance_scale: float | None = None
    notes: str = ""
    source: str | None = None

    def to_dict(self) -> dict:
        record = asdict(self)
        record["intensity"] = {"mapping": self.intensity.mapping, **(
            {"percentiles": list(self.intensity.percentiles)} if self.intensity.mapping == "window8" else {})}
        return record

    @classmethod
    def from_dict(cls, data: dict, where: str = CONVENTION_FILE) -> "Convention":
        """Validate ``data`` (one :class:`InputError` line per problem, naming ``where``)."""
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
        intensity = data.get("intensity", {"mapping": "identity"})
        if isinstance(intensity, str):
            intensity = {"mapping": intensity}
        if not isinstance(intensity, dict) or intensity.get("mapping", "identity") not in MAPPINGS:
            raise InputError(f"{where}: intensity.mapping must be one of {', '.join(MAPPINGS)}")
        percentiles = tuple(float(p) for p in intensity.get("percentiles", (0.5, 99.5)))
        if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise InputError(f"{where}: intensity.percentiles must be two numbers 0 <= low < high <= 100")
        size = data.get("image_size")
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
                raise InputError(f"{where}: image_size must be [rows, columns] in pixels")
        template = data.get("prompt_template", "{view} {finding}")
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None} \
            if isinstance(template, str) else None
        if fields is None or "finding" not in fields or not fields <= {"view", "finding"}:
            raise InputError(f"{where}: prompt_template must contain {{finding}} and may contain {{view}}, "
                             f"nothing else (got {template!r})")
        guidance = data.get("guidance_scale")
        if guidance is not None and (not isinstance(guidance, (int, float)) or not 1.0 <= guidance <= 30.0):
            raise InputError(f"{where}: guidance_scale must be a number from 1 to 30")
        normal = data.get("normal_phrase")
        if normal is not None and (not isinstance(normal, str) or not normal.strip()):
            raise InputError(f"{where}: normal_phrase must be a non-empty string")
        return cls(Intensity(intensity.get("mapping", "identity"), percentiles), size, template, normal,
                   None if guidance is None else float(guidance), str(data.get("notes", "")), where)

    def format_prompt(self, view_sentence: str, finding_sentence: str | None) -> str:
        """The prompt in the model's style; ``finding_sentence`` None = a normal film."""
        body = finding_sentence if finding_sentence is not None else (self.normal_phrase or NORMAL_PHRASE)
        return " ".join(self.prompt_template.format(view=view_sentence, finding=body).split())


def read_convention(path: str | Path) -> Convention:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})") from None
    return Convention.from_dict(data, str(path))


def apply_convention(generator, convention: Convention) -> None:
    """Set ``generator``'s working size and guidance from ``convention`` and attach it
    (the editor reads ``generator.convention`` for the intensity map and the prompts)."""
    if convention.image_size is not None:
        rows, cols = convention.image_size
        if rows % generator.vae_factor or cols % generator.vae_factor:
            raise InputError(f"{convention.source}: image_size {rows}x{cols} is not a multiple of the model's "
                             f"{generator.vae_factor}-pixel latent cell")
        generator.image_size = (rows, cols)
        generator._sites = None  # token grids are probed at the working size
    if convention.guidance_scale is not None:
        generator.guidance_scale = convention.guidance_scale
    generator.convention = convention
