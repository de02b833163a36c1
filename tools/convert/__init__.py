"""The dataset converters behind ``tools/convert_dataset.py``, one module per dataset family."""
