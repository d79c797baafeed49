"""Evaluation: the finding judge (:mod:`~medcf.eval.judge`; trained by
:mod:`medcf.eval.judge_training`) and, with it, the counterfactual benchmark (:mod:`~medcf.eval.bench`)."""
