"""Pictures for people: labelled image grids saved as PNG.

One mechanism for every picture MedCF makes (the study contact sheet now; the
editor's input | counterfactual | difference | masks panels later): tiles of
display-space images with a caption each, and a footer that always carries the
research-only notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcf import RESEARCH_ONLY_NOTICE
from medcf.errors import InputError
from medcf.io.atomic import write_new_file
from medcf.io.display import to_display
from medcf.io.reader import StudyInspection, read_dataset, read_pixels


@dataclass(frozen=True)
class Tile:
    """One image of a grid: display values in [0, 1] (or RGB in [0, 1]) and a caption."""

    image: np.ndarray
    caption: str
    highlight: bool = False


def _thumbnail(image: np.ndarray, size: int) -> "Image.Image":  # noqa: F821
    from PIL import Image

    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    mode = "RGB" if array.ndim == 3 else "L"
    picture = Image.fromarray(np.rint(array * 255).astype(np.uint8), mode=mode).convert("RGB")
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    return picture


def render_grid(tiles: Sequence[Tile], title: str, tile_size: int = 320, columns: int = 4,
                footer: str = RESEARCH_ONLY_NOTICE, note: str | None = None) -> "Image.Image":  # noqa: F821
    """Lay ``tiles`` out on a dark sheet with a title, captions, an optional ``note`` (e.g.
    whether an edit reached its target; one line, or several separated by newlines) and a footer."""
    from PIL import Image, ImageDraw, ImageFont

    if not tiles:
        raise ValueError("nothing to draw")
    font = ImageFont.load_default(size=14)
    title_font = ImageFont.load_default(size=18)
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    lines = max(2, max(len(tile.caption.splitlines()) for tile in tiles))  # the longest caption sets the row
    pad, caption_h, header_h, footer_h = 10, 6 + 17 * lines, 36, 28
    width = columns * (tile_size + pad) + pad
    note_h = 5 + 17 * len(note.splitlines()) if note else 0
    height = header_h + rows * (tile_size + caption_h + pad) + note_h + footer_h
    sheet = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 8), title, fill=(235, 235, 235), font=title_font)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        x = pad + c * (tile_size + pad)
        y = header_h + r * (tile_size + caption_h + pad)
        thumb = _thumbnail(tile.image, tile_size)
        ox, oy = x + (tile_size - thumb.width) // 2, y + (tile_size - thumb.height) // 2
        sheet.paste(thumb, (ox, oy))
        if tile.highlight:
            draw.rectangle([ox - 3, oy - 3, ox + thumb.width + 2, oy + thumb.height + 2],
                           outline=(255, 196, 0), width=3)
        for line_no, line in enumerate(tile.caption.splitlines()):
            draw.text((x, y + tile_size + 4 + 17 * line_no), line, fill=(220, 220, 220), font=font)
    if note:
        for line_no, line in enumerate(note.splitlines()):
            draw.text((pad, height - footer_h - note_h + 6 + 17 * line_no), line, fill=(255, 214, 90), font=font)
    draw.text((pad, height - footer_h + 6), footer, fill=(255, 140, 120), font=font)
    return sheet


def save_png(picture: "Image.Image", path: str | Path) -> Path:  # noqa: F821
    """Write a PNG atomically, never over an existing file."""
    return write_new_file(Path(path), lambda tmp: picture.save(tmp, format="PNG"))


def contact_sheet_tiles(inspection: StudyInspection) -> list[Tile]:
    """One captioned thumbnail per instance that can be decoded; the selected one
    highlighted. Used by ``medcf inspect --png`` so a person can see the study."""
    tiles = []
    for instance in inspection.instances:
        label = (f"{'* ' if instance is inspection.selected else ''}series {instance.series_number or '-'} "
                 f"{instance.modality} {instance.view.value}")
        detail = f"{instance.rows}x{instance.columns} {instance.photometric} {instance.bits_stored}-bit"
        if instance.problems:
            image = np.zeros((64, 64), np.float32)
            detail = "cannot be edited: " + instance.problems[0][:40]
        else:
            try:
                ds = read_dataset(instance.path)
                image, _ = to_display(ds, read_pixels(ds, instance.path))
            except InputError as error:
                image, detail = np.zeros((64, 64), np.float32), str(error)[:48]
        tiles.append(Tile(image, f"{label}\n{detail}", highlight=instance is inspection.selected))
    return tiles


# Colours of overlaid masks, by structure name (RGB in [0, 1]).
MASK_COLOURS: dict[str, tuple[float, float, float]] = {
    "lung_right": (0.2, 0.6, 1.0), "lung_left": (0.2, 1.0, 0.5), "heart": (1.0, 0.3, 0.3),
    "mediastinum": (0.8, 0.5, 1.0), "lesion": (1.0, 0.85, 0.0),
}


def overlay(display: np.ndarray, masks: dict[str, np.ndarray], alpha: float = 0.35) -> np.ndarray:
    """RGB picture of ``display`` with each mask tinted in its colour and the
    lesion outlined, for panels (masks need not be disjoint)."""
    from scipy.ndimage import binary_erosion

    base = np.clip(np.asarray(display, np.float32), 0.0, 1.0)
    rgb = np.repeat(base[..., None], 3, axis=2)
    for name, mask in masks.items():
        colour = np.asarray(MASK_COLOURS.get(name, (1.0, 1.0, 1.0)), np.float32)
        mask = np.asarray(mask, bool)
        if name == "lesion":
            mask = mask & ~binary_erosion(mask, iterations=2)
            rgb[mask] = colour
        else:
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
    return rgb


def difference(after: np.ndarray, before: np.ndarray, gain: float = 2.0) -> np.ndarray:
    """Signed difference shown around mid-grey: brighter = denser after the change."""
    return np.clip(0.5 + gain * (np.asarray(after, np.float32) - np.asarray(before, np.float32)), 0.0, 1.0)
