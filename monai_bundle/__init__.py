"""MedCF's MONAI bundle as an installed data package (``medcf_bundle``).

setup.py installs this folder (configs, docs, the default model's weights and their manifest
``models/medcf_model.json``) under that name, so a wheel carries its model and
:func:`medcf.bundle.bundle_root` finds it with ``importlib.resources`` wherever the wheel is
installed. It holds no code: MONAI's bundle tools read the folder, not this module.
"""
