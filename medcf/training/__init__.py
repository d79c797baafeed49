"""The lab's trainers: one engine (:mod:`~medcf.training.engine`: run folder, checkpoints,
resume, EMA, learning-rate schedules, seeds and threads) and one module per network's recipe:

- :mod:`~medcf.training.autoencoder`, :mod:`~medcf.training.generator`,
  :mod:`~medcf.training.export`: the default model (``medcf train autoencoder|generator``,
  ``medcf model export``);
- :mod:`~medcf.training.segmenter` (on the simulated world; its data
  :mod:`~medcf.training.anatomy_data` and augmentation :mod:`~medcf.training.anatomy_augment`)
  and :mod:`~medcf.training.segmenter_labels` (on films people labelled);
- :mod:`~medcf.eval.judge_training`: the benchmark's finding judge;
- :mod:`~medcf.training.factors`: the causal factor model.

The lab imports the product (models, anatomy, causal, editing, io); nothing in the product
imports this package.
"""
