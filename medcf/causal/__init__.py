"""Causal disentanglement (docs/methods.md §5, issue 22): an anatomy/identity factor and a
pathology factor learned on the simulated world's exact pairs, and the ``causal`` editing
method built on them."""
