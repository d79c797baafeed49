"""Structured finding tokens: what a prompt states -- finding, side, zone, severity -- as
learned cross-attention tokens beside the text encoder's.

Why: the default model's text encoder is frozen MiniLM, whose contextual token states blend
every word of a prompt into every token, so "left" and "right", "mild" and "severe" reach the
denoiser only as small differences spread over 32 similar vectors. The second source paper
conditions its generator on report-derived attributes (severity, location) for the same
reason (``docs/methods.md`` §5). Here each stated finding becomes one extra token,
the sum of four learned embeddings (finding + side + zone + severity; an empty slot is the
learned "no finding" token), appended after the text tokens. The attributes are read from the
prompt by :mod:`medcf.text`'s rule reader -- the same reader for a world caption at training
time and a user's prompt at inference -- so nothing else has to pass them along.

The embeddings live inside the denoiser (``unet.finding_tokens``): they are saved in
``unet.safetensors``, covered by its fingerprint (steering vectors, ``edit_defaults.json`` and
``evidence.json`` stay tied to the whole conditioning), moved and cast with it, and trained and
averaged (EMA) with it without a second mechanism. A model without them is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from medcf.models.base import TextEncoding
from medcf.vocab import Finding, Severity, Side, Zone

#: findings per prompt that get a token (the world's prompts state at most three)
SLOTS = 3
ATTRIBUTE = "finding_tokens"
NONE_TOKEN = "<finding:none>"
# Row 0 of every table is "not stated" (for the finding table: "no finding").
_FINDINGS: tuple[Finding, ...] = tuple(Finding)
_SIDES: tuple[Side, ...] = tuple(Side)
_ZONES: tuple[Zone, ...] = tuple(Zone)
_SEVERITIES: tuple[Severity, ...] = tuple(Severity)


@dataclass(frozen=True)
class FindingCode:
    """One finding a prompt states, as the tokens encode it (None = not stated)."""

    finding: Finding
    side: Side | None = None
    zone: Zone | None = None
    severity: Severity | None = None

    @property
    def token(self) -> str:
        """The token's name in :attr:`TextEncoding.tokens` (never a word the editor looks up)."""
        parts = [self.finding.value] + [v.value if v is not None else "-" for v in (self.side, self.zone, self.severity)]
        return f"<finding:{','.join(parts)}>"

    def rows(self) -> tuple[int, int, int, int]:
        """Row of each attribute in its embedding table (0 = not stated)."""
        return (1 + _FINDINGS.index(self.finding),
                0 if self.side is None else 1 + _SIDES.index(self.side),
                0 if self.zone is None else 1 + _ZONES.index(self.zone),
                0 if self.severity is None else 1 + _SEVERITIES.index(self.severity))


@lru_cache(maxsize=4096)
def read_codes(prompt: str) -> tuple[FindingCode, ...]:
    """The present, certain, editable findings ``prompt`` states, in its order (at most
    :data:`SLOTS`; a normal or empty prompt states none)."""
    if not prompt.strip():
        return ()
    from medcf.text import editable_findings, get_reader

    found = editable_findings(get_reader().parse(prompt))
    return tuple(FindingCode(f.finding, f.side, f.zone, f.severity) for f in found[:SLOTS])


class FindingTokens(torch.nn.Module):
    """``tokens(codes) -> (batch, slots, dim)``: one token per stated finding, the sum of its
    attribute embeddings; empty slots hold the "no finding" token (finding row 0)."""

    def __init__(self, dim: int, slots: int = SLOTS):
        super().__init__()
        self.slots = int(slots)
        self.finding = torch.nn.Embedding(1 + len(_FINDINGS), dim)
        self.side = torch.nn.Embedding(1 + len(_SIDES), dim)
        self.zone = torch.nn.Embedding(1 + len(_ZONES), dim)
        self.severity = torch.nn.Embedding(1 + len(_SEVERITIES), dim)
        for table in (self.side, self.zone, self.severity):
            torch.nn.init.zeros_(table.weight)  # a new model starts from the finding alone

    def rows(self, codes: Sequence[Sequence[FindingCode]]) -> torch.Tensor:
        """``(batch, slots, 4)`` table rows for each prompt's codes (padded with row 0)."""
        rows = torch.zeros((len(codes), self.slots, 4), dtype=torch.long)
        for b, prompt_codes in enumerate(codes):
            for s, code in enumerate(list(prompt_codes)[:self.slots]):
                rows[b, s] = torch.tensor(code.rows())
        return rows

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(self.finding.weight.device)
        return (self.finding(rows[..., 0]) + self.side(rows[..., 1]) + self.zone(rows[..., 2])
                + self.severity(rows[..., 3]))

    @staticmethod
    def names(codes: Sequence[FindingCode], slots: int) -> list[str]:
        listed = [c.token for c in list(codes)[:slots]]
        return listed + [NONE_TOKEN] * (slots - len(listed))

    def initialise_from_words(self, text: Callable[[Sequence[str]], TextEncoding]) -> None:
        """Start each finding's row at the text encoder's mean state for its name, and the
        "no finding" row at the normal sentence's, so a fine-tuned model begins near what it
        already attends to (the side, zone and severity rows start at zero)."""
        from medcf.text.prompts import NORMAL_PHRASE, finding_phrase

        phrases = [NORMAL_PHRASE] + [finding_phrase(f) for f in _FINDINGS]
        encoded = text(phrases)
        with torch.no_grad():
            for row, phrase in enumerate(phrases):
                real = [i for i, t in enumerate(encoded.tokens[row]) if t not in ("[PAD]", "<pad>", "[CLS]", "[SEP]")]
                state = encoded.embeddings[row, real].float().mean(0)
                self.finding.weight[row] = state.to(self.finding.weight)


def structured_token_indices(text: TextEncoding, finding: Finding, prompt_index: int = 0) -> list[int]:
    """Positions of the finding tokens that encode ``finding`` in one prompt (none for a
    model without finding tokens)."""
    prefix = f"<finding:{finding.value},"
    return [i for i, token in enumerate(text.tokens[prompt_index]) if token.startswith(prefix)]


def finding_tokens_of(denoiser: torch.nn.Module) -> FindingTokens | None:
    return getattr(denoiser, ATTRIBUTE, None)


def attach_finding_tokens(denoiser: torch.nn.Module, config: dict | None) -> torch.nn.Module:
    """Give ``denoiser`` its finding tokens when ``config`` (``medcf_generator.json``'s
    ``finding_tokens``) asks for them; ``None`` or ``{}`` leaves it a plain text-conditioned model."""
    if config:
        dim = int(denoiser.config.cross_attention_dim)
        denoiser.add_module(ATTRIBUTE, FindingTokens(dim, int(config.get("slots", SLOTS))))
    return denoiser


class StructuredText:
    """A text function (``prompts -> TextEncoding``) that appends the denoiser's finding
    tokens to the text encoder's: what :class:`~medcf.models.default.DefaultGenerator` uses
    when its model has them."""

    def __init__(self, text: Callable[[Sequence[str]], TextEncoding], tokens: FindingTokens):
        self.text, self.tokens = text, tokens

    def __call__(self, prompts: Sequence[str]) -> TextEncoding:
        base = self.text(prompts)
        codes = [read_codes(p) for p in prompts]
        with torch.no_grad():
            extra = self.tokens(self.tokens.rows(codes)).to(base.embeddings.device, base.embeddings.dtype)
        names = [base.tokens[i] + FindingTokens.names(c, self.tokens.slots) for i, c in enumerate(codes)]
        mask = None
        if base.mask is not None:
            mask = torch.cat([base.mask, torch.ones((len(prompts), self.tokens.slots), dtype=base.mask.dtype,
                                                    device=base.mask.device)], dim=1)
        return TextEncoding(torch.cat([base.embeddings, extra], dim=1), names, list(prompts), mask)

    def __getattr__(self, name: str):  # dim, max_length, tokenizer ... of the wrapped encoder
        if name in ("text", "tokens"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.text, name)
