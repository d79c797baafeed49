"""Evaluation: the finding judge (:mod:`~medcf.eval.judge`) and, with it, the
counterfactual benchmark (:mod:`~medcf.eval.bench`)."""
