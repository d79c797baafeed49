"""The Ray actor: one editor per worker process, loaded once, used for every call.

A plain class (made remote by :func:`medcf.onray.cluster.start_workers`), so importing it
does not import Ray. Each call returns what the driver needs to publish (file bytes,
arrays), never writes into the output folder: the driver is its only writer.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

from medcf.batch.runner import edit_item, one_line
from medcf.editing.pairs import pair_arrays
from medcf.errors import MedCFError


class EditorWorker:
    """Holds the editor a :class:`medcf.editing.api.EditorRecipe` describes."""

    def __init__(self, recipe) -> None:
        self.recipe = recipe
        self.editor = recipe.load()
        self.who = {"host": socket.gethostname(), "pid": os.getpid(),
                    "device": str(getattr(self.editor.generator, "device", "cpu"))}

    def identity(self) -> dict:
        """Where this worker runs (recorded in manifest lines); answers once the editor is loaded."""
        return self.who

    def edit(self, item, options, source: bytes | None) -> dict:
        """One batch item (:func:`medcf.batch.runner.edit_item`) in a private temporary
        folder; returns its files as ``{relative path: bytes}``, or the one-line error.
        ``source``: the input's bytes, used when the input's path is not on this machine."""
        begin = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="medcf-ray-") as scratch:
            path = Path(item.study.selected)
            if not path.is_file() and source is not None:
                path = Path(scratch) / "input" / path.name
                path.parent.mkdir()
                path.write_bytes(source)
            dest = Path(scratch) / "out"
            try:
                edit_item(self.editor, path, item, dest, options)
            except Exception as error:  # noqa: BLE001 - one item's failure is a manifest line
                return {"error": one_line(error), "worker": self.who}
            files = {str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}
        return {"files": files, "seconds": time.monotonic() - begin, "worker": self.who}

    def pair(self, spec) -> dict:
        """One factual/counterfactual pair from ``spec.seed`` (:func:`medcf.editing.pairs.pair_record`),
        or ``{"refused": reason}`` when the factual sample is not read as a chest film."""
        try:
            return {**pair_arrays(self.editor, spec), "worker": self.who}
        except MedCFError as error:
            return {"refused": " ".join(str(error).split()), "worker": self.who}
