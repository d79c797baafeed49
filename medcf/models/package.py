"""A model package: one manifest (``medcf_model.json``) that lists a model's files and what
was measured for them, read once into a typed, frozen :class:`ModelPackage`.

Why a manifest: the editor needs more than a model's weights. Steering vectors, the
per-finding settings ``--method auto`` takes, the evidence behind the model's own check,
the causal factor model and alternative denoisers were each made for one set of weights.
Found by file naming, a stale or foreign file was picked up silently; listed in one
manifest (like diffusers' ``model_index.json``), each file carries its SHA-256 and each
measured piece the fingerprint of the weights it was made for, so a changed file is one
clear error at load, and no module needs to know where another keeps its files.

Manifest (``format`` ``medcf-model-package``, version 1), paths relative to its folder::

    {"format": "medcf-model-package", "version": 1, "name": "...", "model_format": "medcf-default",
     "fingerprints": {"denoiser": "<sha256>", "autoencoder": "<sha256>"},
     "weights": {"config": {"path": "medcf_generator.json", "sha256": "..."}, "denoiser": {...}, ...},
     "pieces": {"steering_vectors": {"files": {"vectors": {"path": ..., "sha256": ...}},
                                     "made_for": {"denoiser": "<fingerprint>"}}, ...},
     "denoisers": {"<name>": {"folder": "denoisers/<name>", "fingerprints": ..., "weights": ..., "pieces": ...}}}

``fingerprints`` and ``made_for`` are parameter fingerprints (:func:`medcf.models.base.module_fingerprint`,
the identity the editor compares at edit time, whatever the file format or ``--dtype``);
``sha256`` is each file's. ``medcf model package DIR`` (:mod:`medcf.models.packaging`)
writes the manifest. A folder without one still loads, as a package with no optional
pieces (a bring-your-own model before it is packaged). The benchmark's judge
(``models/judge/``) is the lab's instrument, not part of the model, and is not listed.

This module reads only JSON: it imports no torch and of MedCF only :mod:`medcf.bundle`
and :mod:`medcf.errors`, so every layer may use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from medcf.bundle import WEIGHTS_DIR, bundle_root, in_installed_bundle
from medcf.errors import InputError

MANIFEST_FILE = "medcf_model.json"
FORMAT = "medcf-model-package"
VERSION = 1
DENOISERS_DIR = "denoisers"  # alternative denoisers, one folder each, beside the weights

_LOG = logging.getLogger(__name__)


class Role(str, Enum):
    """What a file is to the piece that lists it."""

    CONFIG = "config"  # the architecture and schedule (``medcf_generator.json``)
    DENOISER = "denoiser"  # the denoiser's weights
    AUTOENCODER = "autoencoder"
    CONVENTION = "convention"  # the model's input convention (:mod:`medcf.models.convention`)
    VECTORS = "vectors"
    RECORD = "record"  # a JSON record (settings, evidence, a network's architecture and training)
    WEIGHTS = "weights"  # a piece's own network weights


class Identity(str, Enum):
    """Which part of the model a measured piece belongs to (what ``made_for`` fingerprints)."""

    DENOISER = "denoiser"  # steering vectors, per-finding settings, evidence: measured through the denoiser
    AUTOENCODER = "autoencoder"  # the factor model: trained in the autoencoder's latent space
    NONE = "none"  # the segmenter works on films, not on the model


class PieceKind(str, Enum):
    """The optional pieces a package may hold."""

    STEERING_VECTORS = "steering_vectors"
    EDIT_DEFAULTS = "edit_defaults"
    EVIDENCE = "evidence"
    FACTORS = "factors"
    SEGMENTER = "segmenter"
    DOMAIN = "domain"  # the film domain's calibration (medcf.domain): measured through denoiser and autoencoder

    @property
    def identity(self) -> Identity:
        return {PieceKind.FACTORS: Identity.AUTOENCODER, PieceKind.SEGMENTER: Identity.NONE}.get(self, Identity.DENOISER)

    @property
    def identities(self) -> tuple[Identity, ...]:
        """Every part of the model the piece was measured through (``made_for`` names each):
        the domain calibration holds the autoencoder's and the denoiser's errors, so a change
        of either makes it stale."""
        if self is PieceKind.DOMAIN:
            return (Identity.DENOISER, Identity.AUTOENCODER)
        return () if self.identity is Identity.NONE else (self.identity,)


def joint_fingerprint(fingerprints: Mapping[Identity | str, str | None], kind: PieceKind) -> str:
    """The one ``made_for`` string of a piece tied to several parts: their fingerprints
    joined in :attr:`PieceKind.identities` order (a piece tied to one part: that part's)."""
    return "+".join(str(fingerprints.get(i, fingerprints.get(i.value))) for i in kind.identities)


#: The file layout: the one place that names each file of a MedCF model folder. Writers
#: (``medcf model export``, ``medcf steer-vectors``, ``medcf train factors --export`` …) use
#: these names; readers never do, they ask the package.
CONFIG_FILE = "medcf_generator.json"
DENOISER_FILE = "unet.safetensors"
AUTOENCODER_FILE = "autoencoder.safetensors"
CONVENTION_FILE = "medcf_convention.json"
PIECE_FILES: Mapping[PieceKind, Mapping[Role, str]] = MappingProxyType({
    PieceKind.STEERING_VECTORS: {Role.VECTORS: "steering_vectors.safetensors"},
    PieceKind.EDIT_DEFAULTS: {Role.RECORD: "edit_defaults.json"},
    PieceKind.EVIDENCE: {Role.RECORD: "evidence.json"},
    PieceKind.FACTORS: {Role.RECORD: "causal_factors.json", Role.WEIGHTS: "causal_factors.safetensors"},
    PieceKind.SEGMENTER: {Role.WEIGHTS: "anatomy_unet.safetensors", Role.RECORD: "anatomy_training.json"},
    PieceKind.DOMAIN: {Role.RECORD: "domain_calibration.json"},
})


@dataclass(frozen=True)
class PackedFile:
    """One file of a package: where it is and its SHA-256 (None in a package without a
    manifest, whose files were never fingerprinted)."""

    path: Path
    sha256: str | None = None


@dataclass(frozen=True)
class Piece:
    """An optional piece: its files by role, and the fingerprint of the weights it was made
    for (``made_for``; None for a piece that belongs to no weights, the segmenter)."""

    kind: PieceKind
    files: Mapping[Role, PackedFile]
    made_for: str | None = None

    def path(self, role: Role) -> Path:
        if role not in self.files:
            raise InputError(f"the {self.kind.value} piece lists no {role.value} file")
        return self.files[role].path


@dataclass(frozen=True, eq=False)
class ModelPackage:
    """A model folder as its manifest describes it. Optional pieces are None when absent.

    ``parent``: for an alternative denoiser, the package of the model it belongs to (it
    shares that model's autoencoder and text encoder, so pieces tied to those, the factor
    model, are the parent's)."""

    folder: Path
    name: str
    model_format: str | None
    weights: Mapping[Role | str, PackedFile]
    pieces: Mapping[PieceKind, Piece]
    denoisers: Mapping[str, "ModelPackage"] = field(default_factory=dict)
    fingerprints: Mapping[Identity, str] = field(default_factory=dict)
    manifest: Path | None = None
    parent: "ModelPackage | None" = None

    # -- typed accessors -----------------------------------------------------------------
    @property
    def steering_vectors(self) -> Piece | None:
        return self.pieces.get(PieceKind.STEERING_VECTORS)

    @property
    def edit_defaults(self) -> Piece | None:
        return self.pieces.get(PieceKind.EDIT_DEFAULTS)

    @property
    def evidence(self) -> Piece | None:
        return self.pieces.get(PieceKind.EVIDENCE)

    @property
    def factors(self) -> Piece | None:
        return self.pieces.get(PieceKind.FACTORS)

    @property
    def segmenter(self) -> Piece | None:
        return self.pieces.get(PieceKind.SEGMENTER)

    @property
    def domain(self) -> Piece | None:
        return self.pieces.get(PieceKind.DOMAIN)

    @property
    def convention(self) -> Path | None:
        """The model's input convention file, when it has one."""
        packed = self.weights.get(Role.CONVENTION)
        return packed.path if packed is not None else None

    def weights_file(self, role: Role) -> PackedFile | None:
        """A weights file by role (a MedCF default model's config, denoiser, autoencoder);
        None where the format keeps its weights otherwise (diffusers, MONAI bundles)."""
        return self.weights.get(role)

    def find(self, kind: PieceKind) -> Piece | None:
        """The piece of ``kind``: this package's own, else (an alternative denoiser) its parent's."""
        own = self.pieces.get(kind)
        if own is not None or self.parent is None:
            return own
        return self.parent.find(kind)

    def denoiser(self, name: str) -> "ModelPackage":
        """The alternative denoiser ``name`` (one line naming the package when it has none)."""
        if name not in self.denoisers:
            have = ", ".join(sorted(self.denoisers)) or "none"
            raise InputError(f"the measured choice names denoiser '{name}', but the package in {self.folder} "
                             f"lists no such denoiser (has: {have})")
        return self.denoisers[name]

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path) -> "ModelPackage":
        """The package in ``folder`` (its manifest, in the folder or in its ``models/``),
        every listed file checked against its SHA-256; without a manifest, a package with
        no optional pieces and a one-line note."""
        folder = Path(folder)
        manifest = manifest_path(folder)
        if manifest is None:
            return bare(folder)
        return from_manifest(manifest)


def manifest_path(folder: str | Path) -> Path | None:
    """``folder/medcf_model.json`` or ``folder/models/medcf_model.json``, whichever exists."""
    folder = Path(folder)
    return next((p for p in (folder / MANIFEST_FILE, folder / WEIGHTS_DIR / MANIFEST_FILE) if p.is_file()), None)


def weights_folder(folder: str | Path) -> Path:
    """Where a MedCF default model keeps its weights: ``folder`` or its ``models/`` (a bundle)."""
    folder = Path(folder)
    return folder / WEIGHTS_DIR if not (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_DIR / CONFIG_FILE).is_file() \
        else folder


_NOTED: set[Path] = set()


def bare(folder: str | Path, note: bool = True) -> ModelPackage:
    """A folder without a manifest: its weights as its format names them (a MedCF default
    model's three files, unfingerprinted), its input convention if it states one, and no
    optional pieces. Noted once per folder: measured pieces beside it are not used until
    ``medcf model package`` lists them."""
    folder = Path(folder)
    home = weights_folder(folder)
    weights: dict[Role | str, PackedFile] = {}
    model_format = None
    if (home / CONFIG_FILE).is_file():
        model_format = "medcf-default"
        weights = {Role.CONFIG: PackedFile(home / CONFIG_FILE), Role.DENOISER: PackedFile(home / DENOISER_FILE),
                   Role.AUTOENCODER: PackedFile(home / AUTOENCODER_FILE)}
    convention = next((p for p in (folder / CONVENTION_FILE, folder / WEIGHTS_DIR / CONVENTION_FILE) if p.is_file()),
                      None)
    if convention is not None:
        weights[Role.CONVENTION] = PackedFile(convention)
    resolved = folder.resolve()
    if note and folder.is_dir() and resolved not in _NOTED:
        _NOTED.add(resolved)
        _LOG.warning("note: %s has no %s; loaded with no optional pieces (list them with `medcf model package %s`)",
                     folder, MANIFEST_FILE, folder)
    return ModelPackage(home, home.name, model_format, MappingProxyType(weights), MappingProxyType({}))


_VERIFIED: dict[tuple[Path, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of ``path``, hashed once per process for an unchanged file (same size and
    modification time): a package is read each time a model loads, its files seldom change."""
    stat = path.stat()
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        with open(path, "rb") as handle:
            _VERIFIED[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return _VERIFIED[key]


def _packed(entry: Any, base: Path, manifest: Path, where: str) -> PackedFile:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("sha256"), str):
        raise InputError(f"{manifest}: {where} must be an object with 'path' and 'sha256'")
    path = base / entry["path"]
    if not path.is_file():
        raise InputError(f"{manifest} lists {where} {entry['path']}, which is missing from {base}")
    actual = file_sha256(path)
    if actual != entry["sha256"]:
        remedy = ("the installed file is damaged: reinstall the medcf wheel "
                  "(pip install --force-reinstall --no-deps medcf-*.whl)" if in_installed_bundle(path)
                  else f"refresh the manifest with `medcf model package {manifest.parent}`")
        raise InputError(f"{path} does not match {manifest} (sha256 {actual[:12]}…, listed {entry['sha256'][:12]}…): "
                         f"{remedy}")
    return PackedFile(path, actual)


def _role(name: str) -> Role | str:
    try:
        return Role(name)
    except ValueError:
        return name  # a file of a foreign format (diffusers, MONAI), named by its path


def _made_for(entry: Any, kind: PieceKind, manifest: Path) -> str | None:
    """``{"<identity>": "<fingerprint>", ...}`` (None for a piece tied to no weights) → the
    fingerprint (:func:`joint_fingerprint` for a piece tied to several parts)."""
    if not kind.identities:
        return None
    wanted = {identity.value for identity in kind.identities}
    if not isinstance(entry, dict) or set(entry) != wanted:
        shape = ", ".join(f'"{name}": "<fingerprint>"' for name in sorted(wanted))
        raise InputError(f"{manifest}: {kind.value} must say what it was made for as {{{shape}}}")
    return joint_fingerprint(entry, kind)


def _read(data: dict, base: Path, manifest: Path, parent: ModelPackage | None) -> ModelPackage:
    weights = {_role(role): _packed(entry, base, manifest, f"weights {role}")
               for role, entry in (data.get("weights") or {}).items()}
    pieces: dict[PieceKind, Piece] = {}
    for name, entry in (data.get("pieces") or {}).items():
        try:
            kind = PieceKind(name)
        except ValueError:
            raise InputError(f"{manifest}: unknown piece {name!r} (known: "
                             f"{', '.join(k.value for k in PieceKind)})") from None
        files = {Role(role): _packed(file, base, manifest, f"{name} {role}") for role, file in entry["files"].items()}
        pieces[kind] = Piece(kind, MappingProxyType(files), _made_for(entry.get("made_for"), kind, manifest))
    fingerprints = {Identity(k): v for k, v in (data.get("fingerprints") or {}).items()}
    package = ModelPackage(base, data.get("name") or base.name, data.get("model_format"), MappingProxyType(weights),
                           MappingProxyType(pieces), MappingProxyType({}), MappingProxyType(fingerprints), manifest,
                           parent)
    denoisers = {name: _read(entry, base / entry["folder"], manifest, package)
                 for name, entry in (data.get("denoisers") or {}).items()}
    object.__setattr__(package, "denoisers", MappingProxyType(denoisers))  # children point back at their parent
    return package


def from_manifest(manifest: Path) -> ModelPackage:
    """The package ``manifest`` describes, its files checked (one :class:`InputError` line each)."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {manifest}: {error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{manifest} is not valid JSON ({error.msg}, line {error.lineno})") from None
    if data.get("format") != FORMAT:
        raise InputError(f"{manifest}: format {data.get('format')!r} is not {FORMAT!r}")
    if data.get("version") != VERSION:
        raise InputError(f"{manifest}: version {data.get('version')!r} is not {VERSION} (rewrite it with "
                         f"`medcf model package {manifest.parent}`)")
    try:
        return _read(data, manifest.parent, manifest, None)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{manifest} is malformed ({type(error).__name__}: {error})") from None


# --- a loaded model's package ------------------------------------------------------------------

_PACKAGES: "weakref.WeakKeyDictionary[object, ModelPackage]" = weakref.WeakKeyDictionary()
_RECORDS: "weakref.WeakKeyDictionary[object, dict[PieceKind, object]]" = weakref.WeakKeyDictionary()

Record = TypeVar("Record")


def attach_package(generator: object, package: ModelPackage) -> None:
    """Make ``package`` the one ``generator`` was loaded from (the model loaders do; a test
    that rewrites a manifest attaches the new one), forgetting records read from an old one."""
    _PACKAGES[generator] = package
    _RECORDS.pop(generator, None)


def package_of(generator: object) -> ModelPackage:
    """The package ``generator`` was loaded from; for one built otherwise (a bundle config's
    ``DefaultGenerator.from_folder``, a test's in-memory model), its source folder's, read once."""
    if generator not in _PACKAGES:
        source = Path(str(getattr(generator, "source", "")))
        _PACKAGES[generator] = ModelPackage.load(source) if source.is_dir() else \
            ModelPackage(source, source.name, None, MappingProxyType({}), MappingProxyType({}))
    return _PACKAGES[generator]


def denoiser_identity(generator: object) -> str:
    """What a denoiser-tied piece's ``made_for`` is compared with: the generator's weights
    fingerprint (:meth:`medcf.models.base.Generator.weights_fingerprint`)."""
    return generator.weights_fingerprint()  # type: ignore[attr-defined]


def measured(generator: object, kind: PieceKind, load: Callable[[Piece], Record],
             fingerprint: Callable[[object], str] = denoiser_identity) -> Record | None:
    """``load(piece)`` of ``generator``'s piece of ``kind`` (its own, else its parent
    model's), if the piece was made for this model (``made_for == fingerprint(generator)``;
    the denoiser's unless told); else None. Read once per loaded generator: the
    fingerprint hashes every parameter."""
    found = _RECORDS.setdefault(generator, {})
    if kind not in found:
        piece = package_of(generator).find(kind)
        found[kind] = load(piece) if piece is not None and piece.made_for == fingerprint(generator) else None
    return found[kind]  # type: ignore[return-value]


def use_record(generator: object, kind: PieceKind, record: object) -> None:
    """Make ``record`` the one :func:`measured` returns for ``kind`` on ``generator`` (a
    benchmark that runs a method with another piece than the one packaged, e.g. the
    long-tail suite's factor model trained on a skewed set)."""
    _RECORDS.setdefault(generator, {})[kind] = record


def bundle_package(root: str | Path | None = None) -> ModelPackage:
    """The package of the bundle's default model (``monai_bundle/models``)."""
    return ModelPackage.load(Path(root) if root is not None else bundle_root())


def segmenter_weights(root: str | Path | None = None) -> Path:
    """The bundle's default segmenter weights, as its package lists them (what
    ``configs/anatomy.json`` loads)."""
    package = bundle_package(root)
    if package.segmenter is None:
        raise InputError(f"the model package in {package.folder} lists no segmenter (train one with "
                         "`medcf train segmenter`, then `medcf model package`)")
    return package.segmenter.path(Role.WEIGHTS)


def relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base``, POSIX-style (a manifest reads the same on every system)."""
    return Path(os.path.relpath(path, base)).as_posix()
