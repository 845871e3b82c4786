# Set-up, demo, tests and benchmark. Python 3.11+; everything installs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup setup-neural demo test test-neural bench bench-neural schema clean

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,service,ja,qc]'
	@# mediapipe 0.10.21 is the last release with face_mesh models inside the wheel; its declared deps
	@# (jax, numpy<2, opencv-contrib) would clobber ours, so it goes in without them: pyproject lists what it needs.
	$(BIN)/pip install -q --no-deps 'mediapipe==0.10.21'
	$(BIN)/dubforge --help >/dev/null && echo "dubforge is set up: run 'make demo' or '$(BIN)/dubforge --help'"

setup-neural:  # optional: torch + demucs/whisperx/coqui in .venv-neural (about 8 GB, about 4 minutes); see docs/neural.md
	scripts/setup-neural.sh $(PY)

demo:
	$(BIN)/dubforge demo --out demo

test:  # pytest's exit 5 (no tests collected) is a failure here
	$(BIN)/python -m pytest -q; status=$$?; if [ $$status -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$status

test-neural:  # the neural backends with random weights in their real formats (needs `make setup-neural`)
	.venv-neural/bin/python -m pytest -q tests/neural

bench:  # the pipeline (60 s, 3 languages), then stage timings of every torch-free backend
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/backends.py

bench-neural:  # stage timings with the neural backends beside the default ones (needs `make setup-neural`)
	.venv-neural/bin/python benchmarks/backends.py

schema:
	$(BIN)/dubforge schema -o manifests/schema.json

clean:
	rm -rf demo out .pytest_cache
