"""Causal disentanglement (docs/methods.md §5): the factor model, an anatomy/identity factor and
a pathology factor learned on the simulated world's exact pairs (:mod:`medcf.causal.factors`).
It is a model component: the ``causal`` edit method that uses it lives with the other methods
(:mod:`medcf.editing.methods.causal`), its trainer in the lab (:mod:`medcf.training.factors`)."""
