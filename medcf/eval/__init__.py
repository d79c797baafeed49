"""Evaluation: the finding judge (:mod:`~medcf.eval.judge`; trained by
:mod:`medcf.training.judge`) and, with it, the counterfactual benchmark (:mod:`~medcf.eval.bench`)."""
