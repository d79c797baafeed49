# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv/ if missing and installs what it needs first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medcf-installed
DEMO_DIR := build/demo

.PHONY: demo test test-fast install dist system-deps bench bench-reports clean monailabel monailabel-server slicer-env test-slicer

# MONAI Label server (docs/monailabel.md): its own environment, because monailabel 0.8.5 needs
# pydicom < 3 and numpy < 2; the app hands MedCF's work to $(VENV) through a worker process.
ML_VENV := .venv-monailabel
ML_STAMP := $(ML_VENV)/.monailabel-installed
STUDIES ?= build/monailabel-studies
PORT ?= 8000
HOST ?= 127.0.0.1

# The Slicer module's test environment (docs/slicer.md): Kitware's slicer-core wheel (3D Slicer's MRML
# scene, volume and segmentation nodes, no Qt), in its own environment because it pins its own VTK; the
# module's logic calls MedCF in $(VENV) as `python -m medcf` (MEDCF_PYTHON), as it does inside Slicer.
SL_VENV := .venv-slicer
SL_STAMP := $(SL_VENV)/.slicer-core-installed
SLICER_TESTS := tests/test_slicer_logic.py tests/test_slicer_install.py tests/test_slicer_mrml.py tests/test_slicer_remote.py

# constraints.txt: the tested releases (setup.py states ranges; docs/usage.md, "Install").
$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' -c constraints.txt
	# The TorchXRayVision adapter's test needs only the package's source (no torchvision).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps torchxrayvision==1.5.7
	touch $(STAMP)

install: $(STAMP)

# The sdist and the wheel (the wheel built from the sdist, so both are complete) into dist/: the
# wheel carries the MONAI bundle and the default model's weights as the data package medcf_bundle.
# --no-isolation: the build runs on the setuptools of $(VENV), nothing downloaded.
dist: install
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .
	@ls -l dist

$(ML_STAMP): monailabel_app/requirements.txt
	test -x $(ML_VENV)/bin/python || $(PYTHON) -m venv $(ML_VENV)
	# --no-deps: exactly the pinned list (monailabel's own requirements pull mlflow, sam2, torchvision, ...).
	$(ML_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r monailabel_app/requirements.txt
	touch $(ML_STAMP)

monailabel: $(ML_STAMP)

$(SL_STAMP): MedCFExtension/requirements-slicer-core.txt
	test -x $(SL_VENV)/bin/python || $(PYTHON) -m venv $(SL_VENV)
	# --no-deps: exactly the pinned list (vtk's own requirement, matplotlib, is never imported here).
	$(SL_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r MedCFExtension/requirements-slicer-core.txt
	touch $(SL_STAMP)

slicer-env: $(SL_STAMP)

# The Slicer module's tests alone: its logic on a real MRML scene (slicer-core), its background
# process, its .ui in Qt, its remote mode against a real MONAI Label server. `make test` runs them too.
test-slicer: install monailabel slicer-env
	$(PY) -m pytest -q $(SLICER_TESTS)

# STUDIES: a folder of films (NIfTI, PNG, DICOM) or a DICOMweb URL (http://host:port/dicom-web).
# Extra app settings: ML_CONF='-c min_labels 5 -c timeout_counterfactual 3600'.
# The same on any system, Windows included: python -m monailabel_app --studies … (monailabel_app/__main__.py).
monailabel-server: install monailabel
	$(ML_VENV)/bin/python -m monailabel_app --medcf-python $(abspath $(PY)) --studies $(STUDIES) --host $(HOST) \
	--port $(PORT) $(ML_CONF)

system-deps:
	bash scripts/install-system-deps.sh

# The demo: the main job first (add, then remove, a moderate left pleural effusion on the
# committed simulated study: DICOM series + panels), then the pieces it is made of, and the
# simulated world rendering factual/counterfactual pairs of every finding (the chest CT is
# fetched once with pip).
demo: install
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(PY) -m medcf demo --out $(DEMO_DIR)/edit
	$(PY) -m medcf inspect medcf/data/sample_study --png $(DEMO_DIR)/sample-study.png
	$(PY) -m medcf segment medcf/data/sample_study --out $(DEMO_DIR)/anatomy
	$(PY) -m medcf generate --prompt "PA chest radiograph. Moderate left pleural effusion." --n 2 --quiet --out $(DEMO_DIR)/generated
	$(PY) -m medcf data fetch-ct
	$(PY) -m medcf phantom --n 7 --size 256 --seed 0 --ladder --out $(DEMO_DIR)/phantom
	@echo "demo outputs in $(DEMO_DIR): edit/add and edit/remove (synthetic DICOM series, panel.png, masks, edit.json), sample-study.png, anatomy/overlay.png (+ NIfTI, DICOM SEG), generated/ (synthetic samples of the default model), phantom/pairs.jsonl, phantom/panel.png"

test: install system-deps monailabel slicer-env
	$(PY) -m pytest -n 2 -q tests

# The speed and accuracy benchmarks of the runtime's pieces that `medcf bench` does not run:
# film I/O, the simulated world, the anatomy segmenter, sampling. The editor, the judge and the
# downstream suites are `medcf bench --suite counterfactual|judge|augmentation|swap|longtail`.
# Units and small end-to-end runs, under 3 minutes on 2 cores: `make test` without the tests marked
# slow (training, long end-to-end runs) or integration (Orthanc, MONAI Label, Ray, the Slicer
# environment); pytest.ini defines the marks. system-deps: dciodvfy checks every DICOM object written.
test-fast: install system-deps
	$(PY) -m pytest -n 2 -q -m "not slow and not integration" tests

bench: install
	$(PY) benchmarks/bench_io.py
	$(PY) -m medcf data fetch-ct
	$(PY) benchmarks/bench_world.py
	$(PY) benchmarks/bench_anatomy.py
	$(PY) benchmarks/bench_edit_speed.py
	$(PY) benchmarks/bench_generator.py --threads 1

bench-reports: install
	$(PY) benchmarks/bench_reports.py

clean:
	rm -rf build dist .pytest_cache
