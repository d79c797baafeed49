"""Counterfactual editing: one attention controller (:mod:`~medcf.editing.control`) that
every method consults — anatomy regulation and pathology enhancement
(:mod:`~medcf.editing.regulation`), the concentration energy (:mod:`~medcf.editing.energy`),
MedSteer steering (:mod:`~medcf.editing.steering`) — inversion
(:mod:`~medcf.editing.inversion`), edit regions (:mod:`~medcf.editing.regions`), the edit
methods as registered plugins (:mod:`~medcf.editing.methods`), the plan that settles a
request before the edit (:mod:`~medcf.editing.plan`), the editor core
(:mod:`~medcf.editing.edit`) and the record of an edit (:mod:`~medcf.editing.record`). Specification: docs/methods.md §0–4.
"""

from medcf.editing.spec import EditSpec, Inversion, Method

__all__ = ["EditSpec", "Inversion", "Method"]
