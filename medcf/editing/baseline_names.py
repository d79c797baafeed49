"""The counterfactual benchmark's baselines by name, and what each runs with.

A module of its own, with no imports: the command line lists these names when it builds its
parser, and building the parser must not import torch or the samplers
(:mod:`medcf.editing.methods.baselines` runs them).
"""

from __future__ import annotations

BASELINES = ("reprompt", "sdedit", "ddim+p2p", "pnp")
MASK_SUFFIX = "+mask"
MASKED_BASELINES = tuple(name + MASK_SUFFIX for name in BASELINES)
BASELINE_SETTINGS = {
    "reprompt": {"inversion": "ddim", "steps": 25},
    "sdedit": {"strength": 0.6, "steps": 25},
    "ddim+p2p": {"inversion": "ddim", "cross_replace": 0.8, "self_replace": 0.4, "steps": 25},
    "pnp": {"inversion": "ddim", "self_attention": 0.5, "features": 0.8, "feature_level": "finest decoder",
            "steps": 25},
}


def unmasked_name(name: str) -> str:
    """``reprompt+mask`` → ``reprompt``; names without the suffix unchanged."""
    return name[:-len(MASK_SUFFIX)] if name.endswith(MASK_SUFFIX) else name
