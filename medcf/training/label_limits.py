"""What a fine-tune on the user's own labels needs at least. Its own module, with no imports:
the command line states it in ``--help`` without importing the fine-tune (MONAI, torch)."""

MIN_LABELS = 3  # fewer labelled films than this: refused (the fine-tune would fit a handful)
