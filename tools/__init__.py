"""Scripts run from a checkout (``python tools/<name>.py``); :mod:`tools.convert` holds the
dataset converters that ``convert_dataset.py`` runs."""
