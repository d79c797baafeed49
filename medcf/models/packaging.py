"""``medcf model package DIR``: write (or refresh) a model folder's manifest.

The manifest (:mod:`medcf.models.package`) is derived from the folder: the weights its
format loads, and the optional pieces found beside them under their layout names
(:data:`~medcf.models.package.PIECE_FILES`), each with its SHA-256 and the fingerprint of
the weights it was made for, read from the piece itself. The model is loaded once to take
its own fingerprints, so the manifest shows at a glance which pieces fit these weights
(a piece made for other weights is listed, and the editor leaves it unused, as it always has).
A bring-your-own model gets a package with only what it has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from medcf.errors import InputError
from medcf.io.atomic import replace_own_text
from medcf.models.base import module_fingerprint
from medcf.models.default import build_unet, load_weights, read_config
from medcf.models.loaders import detect_format, load_generator
from medcf.models.package import (
    AUTOENCODER_FILE,
    CONFIG_FILE,
    CONVENTION_FILE,
    DENOISER_FILE,
    DENOISERS_DIR,
    FORMAT,
    MANIFEST_FILE,
    PIECE_FILES,
    VERSION,
    Identity,
    PieceKind,
    Role,
    bare,
    joint_fingerprint,
    file_sha256,
    relative,
    weights_folder,
)


@dataclass(frozen=True)
class Packaged:
    """What ``medcf model package`` wrote, and what the user should know about it."""

    manifest: Path
    pieces: list[str]  # "<piece>: <files>" per listed piece, the model's and its denoisers'
    notes: list[str]  # pieces made for other weights (listed, not used by the editor)


def _entry(path: Path, base: Path) -> dict:
    return {"path": relative(path, base), "sha256": file_sha256(path)}


def _diffusers_files(folder: Path) -> list[Path]:
    """``model_index.json`` and every file of the components it names (what the pipeline loads)."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    components = [name for name, value in index.items()
                  if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None]
    files = [folder / "model_index.json"]
    for name in sorted(components):
        files += sorted(p for p in (folder / name).rglob("*") if p.is_file())
    return files


def _monai_files(folder: Path) -> list[Path]:
    """A MONAI bundle's configs and everything under ``models/`` but this package's own pieces."""
    ours = {name for files in PIECE_FILES.values() for name in files.values()} | {MANIFEST_FILE}
    files = sorted(p for p in (folder / "configs").glob("*") if p.is_file())
    files += sorted(p for p in (folder / "models").rglob("*") if p.is_file() and p.name not in ours)
    return files


def _weights(model_format: str, folder: Path, base: Path) -> dict:
    if model_format == "medcf-default":
        weights = {Role.CONFIG.value: _entry(base / CONFIG_FILE, base),
                   Role.DENOISER.value: _entry(base / DENOISER_FILE, base),
                   Role.AUTOENCODER.value: _entry(base / AUTOENCODER_FILE, base)}
    else:
        files = _diffusers_files(folder) if model_format.startswith("diffusers") else _monai_files(folder)
        weights = {relative(p, base): _entry(p, base) for p in files if p.name != CONVENTION_FILE}
    convention = next((p for p in (base / CONVENTION_FILE, base / "models" / CONVENTION_FILE) if p.is_file()), None)
    if convention is not None:
        weights[Role.CONVENTION.value] = _entry(convention, base)
    return weights


def _made_for(kind: PieceKind, files: dict[Role, Path]) -> dict[str, str | None]:
    """The fingerprints a piece names for the weights it was made for (its own record says),
    by identity (empty for a piece tied to no weights)."""
    if not kind.identities:
        return {}
    if kind is PieceKind.STEERING_VECTORS:
        from safetensors import safe_open

        with safe_open(str(files[Role.VECTORS]), framework="pt") as handle:
            return {Identity.DENOISER.value: (handle.metadata() or {}).get("denoiser_sha256")}
    record = json.loads(files[Role.RECORD].read_text(encoding="utf-8"))
    return {identity.value: record.get(f"{identity.value}_sha256") for identity in kind.identities}


def _pieces(places: list[Path], base: Path, fingerprints: dict[Identity, str], where: str,
            listed: list[str], notes: list[str]) -> dict:
    """Every piece whose first file is in one of ``places``; notes for those made for other weights."""
    pieces = {}
    for kind, names in PIECE_FILES.items():
        home = next((place for place in places if (place / next(iter(names.values()))).is_file()), None)
        if home is None:
            continue
        files = {role: home / name for role, name in names.items() if (home / name).is_file()}
        named = _made_for(kind, files)
        pieces[kind.value] = {"files": {role.value: _entry(path, base) for role, path in files.items()},
                              "made_for": named or None}
        listed.append(f"{where}{kind.value}: {', '.join(relative(p, base) for p in files.values())}")
        made_for, wanted = joint_fingerprint(named, kind), joint_fingerprint(fingerprints, kind)
        if kind.identities and made_for != wanted:
            notes.append(f"{where}{kind.value} was made for other weights ({str(made_for)[:12]}…, these "
                         f"{str(wanted)[:12]}…): listed, but the editor does not use it")
    return pieces


def _denoisers(base: Path, listed: list[str], notes: list[str]) -> dict:
    """Alternative denoisers in ``base/denoisers/<name>/`` (a MedCF default model's)."""
    found = {}
    root = base / DENOISERS_DIR
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        if not ((folder / DENOISER_FILE).is_file() and (folder / CONFIG_FILE).is_file()):
            continue
        own = read_config(folder)
        unet = build_unet(own)
        load_weights(unet, folder / DENOISER_FILE)
        fingerprints = {Identity.DENOISER: module_fingerprint(unet)}
        where = f"denoiser {folder.name}: "
        listed.append(f"{where}weights: {relative(folder / DENOISER_FILE, base)}")
        found[folder.name] = {
            "folder": relative(folder, base),
            "fingerprints": {k.value: v for k, v in fingerprints.items()},
            "weights": {Role.CONFIG.value: _entry(folder / CONFIG_FILE, folder),
                        Role.DENOISER.value: _entry(folder / DENOISER_FILE, folder)},
            "pieces": _pieces([folder], folder, fingerprints, where, listed, notes),
        }
    return found


def describe(folder: str | Path, name: str | None = None,
             text_encoder: str | Path | None = None) -> tuple[dict, Path, list[str], list[str]]:
    """The manifest for ``folder`` (not written), where it goes, the pieces it lists and notes
    (``text_encoder``: a local CLIP folder for a MONAI bundle that does not carry one)."""
    folder = Path(folder)
    model_format = detect_format(folder)
    base = weights_folder(folder) if model_format == "medcf-default" else folder
    generator = load_generator(folder, text_encoder=text_encoder, package=bare(folder, note=False))  # the package being written is not read
    autoencoder = getattr(generator, "vae", None) or getattr(generator, "autoencoder")
    fingerprints = {Identity.DENOISER: generator.weights_fingerprint(), Identity.AUTOENCODER: module_fingerprint(autoencoder)}
    listed: list[str] = []
    notes: list[str] = []
    places = list(dict.fromkeys([base, folder, folder / "models"]))
    manifest = {
        "format": FORMAT, "version": VERSION, "name": name or _bundle_name(folder) or base.name,
        "model_format": model_format,
        "written_by": "medcf model package (medcf/models/packaging.py); refresh it after changing any file it lists",
        "fingerprints": {k.value: v for k, v in fingerprints.items()},
        "weights": _weights(model_format, folder, base),
        "pieces": _pieces([p for p in places if p.is_dir()], base, fingerprints, "", listed, notes),
    }
    if model_format == "medcf-default":
        manifest["denoisers"] = _denoisers(base, listed, notes)
    del generator
    return manifest, base / MANIFEST_FILE, listed, notes


def _bundle_name(folder: Path) -> str | None:
    """A MONAI bundle's name (``configs/metadata.json``), when ``folder`` is one or its ``models/``."""
    for meta in (folder / "configs" / "metadata.json", folder.parent / "configs" / "metadata.json"):
        if meta.is_file():
            name = json.loads(meta.read_text(encoding="utf-8")).get("name")
            return str(name) if name else None
    return None


def refresh_package(folder: str | Path) -> Packaged | None:
    """After a command wrote a piece into ``folder`` (``medcf train factors --export DIR``):
    when ``folder`` holds a model, rewrite its manifest so that the new piece is listed and
    used; None when it holds no model (a piece exported on its own, for ``--factors``)."""
    try:
        detect_format(folder)
    except InputError:
        return None
    return write_manifest(folder)


def write_manifest(folder: str | Path, name: str | None = None, text_encoder: str | Path | None = None) -> Packaged:
    """Write (or replace) the manifest of the model in ``folder``; the manifest is derived
    from the folder, so refreshing it loses nothing."""
    with torch.no_grad():
        manifest, path, listed, notes = describe(folder, name, text_encoder)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent} does not exist")
    replace_own_text(path, json.dumps(manifest, indent=1) + "\n")
    return Packaged(path, listed, notes)
