"""The editor's commands as library functions (``medcf edit``, ``medcf pairs``,
``medcf steer-vectors``, ``medcf demo``); the CLI and the Slicer module only parse
arguments and call these."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from medcf.anatomy.given import GivenMasks, read_masks
from medcf.anatomy.outputs import load_segmenter, place_segmenter, segmenter_record
from medcf.anatomy.plausibility import require_plausible
from medcf.anatomy.segment import segment
from medcf.bundle import bundle_root
from medcf.devices import Placement, loader_kwargs, resolve_placement
from medcf.domain.assess import DomainStatus, DomainVerdict, assess, require_inside
from medcf.editing.edit import run_plan
from medcf.editing.film import FilmFacts
from medcf.editing.methods import FilmEditMethod, get_method, uses_model
from medcf.editing.outputs import EditOutputs, write_edit
from medcf.editing.pairs import write_pairs
from medcf.editing.plan import EditPlan, load_planned, plan_edit
from medcf.editing.record import EditRecord, ModelInfo
from medcf.editing.records import own_vectors, vectors_cache_path
from medcf.editing.spec import SIDELESS, EditSpec, Method
from medcf.editing.steering import SteeringVectors, estimate_vectors, load_vectors
from medcf.errors import InputError
from medcf.io.atomic import new_output_dir
from medcf.io.inputs import InputImage, read_input
from medcf.models.loaders import load_generator
from medcf.text import editable_findings, get_reader
from medcf.vocab import Action, Finding, Organ, Severity, Side, ViewPosition


@dataclass
class Editor:
    """A loaded generator, its steering vectors (if any) and the segmenter."""

    generator: object
    vectors: SteeringVectors | None
    vectors_path: Path | None
    segmenter: object

    @cached_property
    def model_info(self) -> ModelInfo:
        """Names and SHA-256 of the weights and vectors (hashed once per editor, not per edit);
        an editor loaded without a model (film methods only) says so."""
        if self.generator is None:
            return ModelInfo.without_model()
        return ModelInfo.of(self.generator, self.vectors_path)


@dataclass(frozen=True)
class EditorRecipe:
    """How to load an editor rather than the editor itself: the one path from a command's
    options to an :class:`Editor`, for ``medcf edit``, ``pairs`` and ``batch`` alike and for
    each Ray worker, which loads its own copy once (a loaded model is not shipped over the
    network) on its own device (``auto``: its GPU when it has one)."""

    model: str | None = None
    vectors: str | None = None
    segmenter: str | None = None
    weights: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    text_encoder: str | None = None

    @classmethod
    def from_args(cls, args, segmenter: bool = True) -> "EditorRecipe":
        """The recipe a parsed command line asks for (``segmenter=False``: the user's own
        masks replace the segmenter, so ``--segmenter``/``--weights`` are not loaded)."""
        def text(value):
            return None if value is None else str(value)

        return cls(model=text(args.model), vectors=text(args.vectors),
                   segmenter=getattr(args, "segmenter", None) if segmenter else None,
                   weights=text(getattr(args, "weights", None)) if segmenter else None,
                   device=getattr(args, "device", "auto"), dtype=getattr(args, "dtype", "float32"),
                   text_encoder=text(getattr(args, "text_encoder", None)))

    def placement(self) -> Placement:
        """The device and dtype; one :class:`InputError` line for a device this machine lacks."""
        return resolve_placement(self.device, self.dtype)

    def load_segmenter(self, placement: Placement | None = None):
        """The segmenter ``--segmenter``/``--weights`` name, placed (None: the bundle's default,
        which :func:`load_editor` loads). Called before the model so that a wrong segmenter
        fails in one line before seconds of loading."""
        if not (self.segmenter or self.weights):
            return None
        return load_segmenter(self.segmenter, self.weights, placement or self.placement())

    def load(self, segmenter=None, model: bool = True) -> Editor:
        """The editor on this recipe's placement (``segmenter``: one loaded already by
        :meth:`load_segmenter`; ``model=False``: no diffusion model, for edits whose methods
        all edit the film itself, :func:`needs_model`)."""
        placement = self.placement()
        if segmenter is None:
            segmenter = self.load_segmenter(placement)
        if not model:
            return Editor(None, None, None, segmenter if segmenter is not None
                          else load_segmenter(placement=placement))
        return load_editor(self.model, self.vectors, segmenter=segmenter, placement=placement,
                           text_encoder=self.text_encoder)


def needs_model(specs: list[EditSpec]) -> bool:
    """Whether any of ``specs`` needs the diffusion model: ``auto`` (settled on the model),
    or a method that edits a latent; a method that edits the film itself
    (:class:`~medcf.editing.methods.FilmEditMethod`) does not, and loading the model would
    cost it more than its whole edit."""
    return any(spec.method is Method.AUTO or not isinstance(get_method(spec.method), FilmEditMethod)
               for spec in specs)


def load_editor(model: str | Path | None = None, vectors: str | Path | None = None,
                segmenter=None, placement: Placement | None = None,
                text_encoder: str | Path | None = None) -> Editor:
    """The model (default: the bundle's), its vectors (``vectors``, else the file shipped
    beside the weights, else the cache ``medcf steer-vectors`` fills) and the segmenter,
    on ``placement``'s device and dtype (``--device``/``--dtype``; default CPU float32).
    A ``segmenter`` given here is placed too. ``text_encoder``: a local CLIP folder for a
    MONAI LDM bundle that does not carry one (``--text-encoder``)."""
    generator = load_generator(model or bundle_root(), text_encoder=text_encoder, **loader_kwargs(placement))
    if segmenter is None:
        segmenter = load_segmenter(placement=placement)
    elif placement is not None:
        segmenter = place_segmenter(segmenter, placement)
    loaded, path = own_vectors(generator, vectors)
    return Editor(generator, loaded, path, segmenter)


def _view(image) -> ViewPosition:
    radiograph = getattr(image, "radiograph", None)
    view = getattr(radiograph, "view", None)
    return ViewPosition.AP if view is ViewPosition.AP else ViewPosition.PA


def domain_verdicts(plans: list[EditPlan], generator, display, masks, what: str) -> list[DomainVerdict]:
    """Where the film lies for the model, per planned edit: assessed once (inside the lungs
    and over the whole film, :func:`medcf.domain.assess.assess`) when any plan's method
    runs the model; NOT_ASSESSED for a method that does not. Outside the domain, an edit
    whose spec does not allow it is refused in one line before anything is written."""
    verdict = None
    verdicts = []
    for plan in plans:
        if not uses_model(plan.method):
            verdicts.append(DomainVerdict(DomainStatus.NOT_ASSESSED, allowed=plan.spec.allow_out_of_domain))
            continue
        if verdict is None:
            lungs = masks.organs[Organ.LUNG_RIGHT] | masks.organs[Organ.LUNG_LEFT]
            verdict = assess(generator, display, lungs)
        verdicts.append(require_inside(replace(verdict, allowed=plan.spec.allow_out_of_domain), what))
    return verdicts


def edit_file(path: str | Path, specs: list[EditSpec], out_dir: str | Path, editor: Editor | None = None,
              progress: bool = True, command: str | None = None, extras: list[dict] | None = None,
              sop_class: str = "sc", masks: str | Path | GivenMasks | None = None,
              accept_anatomy: bool = False, image: InputImage | None = None) -> list[EditOutputs]:
    """Read, segment (or read the user's ``masks`` file: a label map, a .seg.nrrd or a DICOM
    SEG, :mod:`medcf.anatomy.given`), check the anatomy's plausibility (refused unless
    ``accept_anatomy``), plan, edit and write; one output folder per spec (``out_dir`` itself
    for one spec, ``out_dir/<n>-<finding>`` for several, e.g. from a report). The provenance
    records where the anatomy came from and the check's verdict. ``image`` (``path`` as
    read already) and ``masks`` as :class:`GivenMasks`: what a caller read to check before
    loading the model, so that each file is read once. A film outside the model's domain
    (:mod:`medcf.domain`) is refused in one line before anything is written, unless the
    spec allows it (``allow_out_of_domain``) or its method runs no diffusion model; the
    record says where the film lies either way."""
    if not specs:
        raise InputError("nothing to edit: no edit was requested")
    image = image if image is not None else read_input(path)  # input errors come before the model loads
    given = masks if isinstance(masks, GivenMasks) or masks is None else read_masks(masks, image)
    editor = editor or load_editor()
    if given is not None:
        anatomy, masks = given.record(), given.masks
    else:
        masks = segment(image.display, editor.segmenter)
        anatomy = {"source": "segmenter", **segmenter_record(masks, editor.segmenter)}
    anatomy["plausibility"] = require_plausible(masks, image.display, str(path), accept_anatomy).to_dict()
    view = _view(image)
    plans = [plan_edit(spec, editor.generator, has_vectors=editor.vectors is not None) for spec in specs]
    domains = domain_verdicts(plans, editor.generator, image.display, masks, str(path))  # refused: nothing written
    outputs = []
    root = Path(out_dir)
    if len(specs) > 1:
        root = new_output_dir(root)
    for index, (spec, plan, domain) in enumerate(zip(specs, plans, domains)):
        model = load_planned(plan, editor.generator, editor.vectors)
        counterfactual = run_plan(image.display, masks, plan, model, view, progress, outside_domain=domain.outside,
                                  facts=FilmFacts.of(image.radiograph.transform if image.radiograph else None,
                                                     image.spacing_mm))
        target = root if len(specs) == 1 else root / f"{index + 1}-{spec.action.value}-{spec.finding.value}"
        record = EditRecord.of(counterfactual, editor.model_info, image, command, anatomy,
                               (extras or [{}] * len(specs))[index], domain)
        outputs.append(write_edit(image, masks, counterfactual, record, target, sop_class))
    return outputs


def specs_from_report(text: str, action: Action, base: EditSpec | None = None, backend: str = "rules"
                      ) -> tuple[list[EditSpec], list[dict]]:
    """Edit specs for every present, certain, editable finding of a report, and what each
    came from (goes into the provenance). A finding the report gives no side for is edited
    on both sides; one it gives no severity for at the base spec's."""
    mentions = get_reader(backend).parse(text)
    found = editable_findings(mentions)
    if not found:
        raise InputError("the report states no present, certain finding the editor can "
                         f"{action.value} ({', '.join(f.value for f in Finding)})")
    base = base or EditSpec(Finding.PLEURAL_EFFUSION, action, Side.LEFT)  # method, strength, seed ... to keep
    specs, sources = [], []
    for item in found:
        side = None if item.finding in SIDELESS else (item.side or Side.BILATERAL)
        zone = None if item.finding in SIDELESS else item.zone
        specs.append(replace(base, finding=item.finding, action=action, side=side, zone=zone,
                             severity=item.severity or base.severity))
        sources.append({"report": {"evidence": item.evidence, "finding": item.finding.value,
                                   "side": item.side.value if item.side else None,
                                   "zone": item.zone.value if item.zone else None,
                                   "severity": item.severity.value if item.severity else None}})
    return specs, sources


def estimate_and_cache(findings: list[Finding], n_seeds: int, seed: int = 0, steps: int = 25,
                       side: Side | None = None, severity: Severity | None = None, model: str | Path | None = None,
                       out: str | Path | None = None, progress: bool = True,
                       placement: Placement | None = None,
                       text_encoder: str | Path | None = None) -> tuple[Path, dict]:
    """``medcf steer-vectors``: estimate vectors and write them to ``out`` (default: the
    cache keyed by the model's weights, merged with what is cached there already); the
    file and what the estimate cost (seconds, films sampled, device)."""
    generator = load_generator(model or bundle_root(), text_encoder=text_encoder, **loader_kwargs(placement))
    vectors = estimate_vectors(generator, findings, list(range(seed, seed + n_seeds)), steps=steps, side=side,
                               severity=severity, progress=progress)
    cost = vectors.info[findings[0].value]["cost"] if findings else {}
    if out is not None:
        return vectors.save(out), cost
    path = vectors_cache_path(vectors.fingerprint)
    if path.is_file():
        cached = load_vectors(path, fingerprint=vectors.fingerprint)
        if cached.timesteps == vectors.timesteps:
            vectors = cached.merged(vectors)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return vectors.save(path), cost


def make_pairs(specs: list[EditSpec], out_dir: str | Path, editor: Editor | None = None,
               progress: bool = True) -> Path:
    """One factual/counterfactual pair per spec (``medcf.editing.pairs.seeded_specs`` for n
    pairs of one edit, :meth:`medcf.editing.report_mix.ReportMix.draw` for a report corpus's mix)."""
    editor = editor or load_editor()
    return write_pairs(editor.generator, specs, out_dir, editor.segmenter, editor.vectors, progress)


def run_demo(out_dir: str | Path, study: str | Path | None = None, method: str = "auto",
             progress: bool = True, placement: Placement | None = None) -> dict[str, Path | str]:
    """The main job on the committed sample study: add a moderate left pleural effusion,
    then remove it again from the counterfactual (read back from its DICOM file). Returns
    the panels and DICOM files, and the model's own verdict on each edit."""
    study = Path(study) if study else Path(__file__).resolve().parents[1] / "data" / "sample_study"
    out = new_output_dir(out_dir)
    editor = load_editor(placement=placement)
    spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, severity=Severity.MODERATE, method=method)
    added = edit_file(study, [spec], out / "add", editor, progress, command="medcf demo")[0]
    removed = edit_file(added.files["dicom"], [replace(spec, action=Action.REMOVE)], out / "remove", editor,
                        progress, command="medcf demo")[0]
    return {"add_panel": added.files["panel"], "add_dicom": added.files["dicom"], "add_check": added.check,
            "remove_panel": removed.files["panel"], "remove_dicom": removed.files["dicom"],
            "remove_check": removed.check}


def parse_seed_range(text: str) -> tuple[int, int]:
    """``"64"`` → (0, 64) seeds; ``"100-163"`` → (100, 64)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", text)
    if not match:
        raise InputError(f"--seeds {text!r}: give a count (64) or a range (100-163)")
    if match.group(2) is None:
        return 0, int(match.group(1))
    low, high = int(match.group(1)), int(match.group(2))
    if high < low:
        raise InputError(f"--seeds {text!r}: the range is empty")
    return low, high - low + 1
