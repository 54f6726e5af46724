# visiontune: `make demo` runs the main job on the embedded Fashion-MNIST data,
# `make test` runs the test suite, `make bench` the benchmarks. Each one
# creates .venv and installs what it needs on a fresh machine.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel here; the GPU image installs a CUDA build of the same release.
TORCH_PIN := torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := true
export BENTOML_DO_NOT_TRACK := true

.PHONY: install demo demo-digits test bench lint clean fashion-mnist

$(BIN)/.installed: pyproject.toml
	command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (see README)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed fashion-mnist
	$(BIN)/python -m visiontune.demo

demo-digits: $(BIN)/.installed
	$(BIN)/python -m visiontune.demo --digits

test: $(BIN)/.installed tools podman prometheus fonts fashion-mnist label-studio
	$(BIN)/ruff check .
	$(BIN)/pytest

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.run

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Container image and local deployment (deploy/, docs/operations.md): podman,
# buildah and the offline checkers are installed on first use.
TOOLS := .venv-tools

.PHONY: tools podman prometheus fonts label-studio image deploy-local undeploy-local

$(TOOLS)/.installed: deploy/tools/requirements.txt deploy/tools/crd/package-lock.json
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet -r deploy/tools/requirements.txt
	npm ci --silent --no-audit --no-fund --prefix deploy/tools/crd
	touch $@

tools: $(TOOLS)/.installed

podman:
	deploy/local/setup-podman.sh

# A throwaway Prometheus runs the alert rules and dashboard queries on what the
# e2e test's pod exports; promtool checks the rules.
prometheus:
	deploy/local/install-debian-packages.sh prometheus

# Label Studio for the capture loop's end-to-end test (tests/support/label_studio.py):
# a venv of its own (about 1 GB), and an empty database migrated once into
# template/, which each test start copies (a fresh migration takes a minute or more).
LABEL_STUDIO := .venv-label-studio
# sentry-sdk 3 refuses an option Label Studio 1.23's settings pass at start-up
LABEL_STUDIO_PIN := label-studio==1.23.2 'sentry-sdk<3'

$(LABEL_STUDIO)/.installed:
	test -x $(LABEL_STUDIO)/bin/python || $(PYTHON) -m venv $(LABEL_STUDIO)
	$(LABEL_STUDIO)/bin/pip install --quiet $(LABEL_STUDIO_PIN)
	rm -rf $(LABEL_STUDIO)/template
	LABEL_STUDIO_BASE_DATA_DIR=$(abspath $(LABEL_STUDIO))/template DJANGO_DB=sqlite \
		LABEL_STUDIO_LATEST_VERSION_CHECK=false LABEL_STUDIO_COLLECT_ANALYTICS=false \
		$(LABEL_STUDIO)/bin/label-studio version > /dev/null
	touch $@

label-studio: $(LABEL_STUDIO)/.installed

# Fashion-MNIST (`--data fashion-mnist`, the demo): Debian's package of the idx files.
fashion-mnist:
	deploy/local/install-debian-packages.sh dataset-fashion-mnist

# Fonts for labels in any script (CJK, Arabic, Devanagari, emoji) on the training
# report's plots; without them those characters are drawn as boxes.
fonts:
	deploy/local/install-debian-packages.sh fonts-noto-core fonts-droid-fallback fonts-symbola

image: $(BIN)/.installed podman
	deploy/local/build-image.sh

deploy-local: $(BIN)/.installed podman
	deploy/local/deploy.sh

undeploy-local: podman
	deploy/local/undeploy.sh
