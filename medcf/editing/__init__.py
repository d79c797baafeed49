"""Counterfactual editing: one attention controller (:mod:`~medcf.editing.control`) that
every method consults — anatomy regulation and pathology enhancement
(:mod:`~medcf.editing.regulation`), the concentration energy (:mod:`~medcf.editing.energy`),
MedSteer steering (:mod:`~medcf.editing.steering`) — inversion
(:mod:`~medcf.editing.inversion`), edit regions (:mod:`~medcf.editing.regions`), and the
editor itself (:mod:`~medcf.editing.edit`). Specification: docs/methods.md §0–4.
"""

from medcf.editing.spec import EditSpec, Inversion, Method

__all__ = ["EditSpec", "Inversion", "Method"]
