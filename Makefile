# Set-up, demo, tests and benchmark. Python 3.11+; everything installs into .venv.
# `make demo` and `make test` set up what they need themselves: on a fresh clone they are the only two commands.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dubforge-setup
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup system-test-deps setup-neural demo test test-neural bench bench-neural schema clean

setup: $(STAMP)

# Re-run when the dependencies change; mediapipe 0.10.21 is the last release with face_mesh models inside the
# wheel; its declared deps (jax, numpy<2, opencv-contrib) would clobber ours, so it goes in without them: pyproject
# lists what it needs.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,service,ja]'
	$(BIN)/pip install -q --no-deps 'mediapipe==0.10.21'
	$(BIN)/dubforge --help >/dev/null && touch $(STAMP) && echo "dubforge is set up: run 'make demo' or '$(BIN)/dubforge --help'"

# Debian's PostgreSQL (service tests) and Chromium (Prefect UI screenshot test), installed when missing and root;
# otherwise those tests skip and say why.
system-test-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql chromium; \
	  else echo "postgresql/chromium missing and not root: the service and UI tests will skip"; fi; \
	fi

setup-neural:  # optional: torch + demucs/whisperx/coqui in .venv-neural (about 8 GB, about 4 minutes); see docs/neural.md
	scripts/setup-neural.sh $(PY)

demo: $(STAMP)
	$(BIN)/dubforge demo --out demo

test: $(STAMP) system-test-deps  # pytest's exit 5 (no tests collected) is a failure here
	$(BIN)/python -m pytest -q; status=$$?; if [ $$status -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$status

test-neural:  # the neural backends with random weights in their real formats (needs `make setup-neural`)
	.venv-neural/bin/python -m pytest -q tests/neural

bench: $(STAMP)  # the pipeline (60 s, 3 languages), then stage timings of every torch-free backend
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/backends.py

bench-neural:  # stage timings with the neural backends beside the default ones (needs `make setup-neural`)
	.venv-neural/bin/python benchmarks/backends.py

schema: $(STAMP)
	$(BIN)/dubforge schema -o manifests/schema.json
	$(BIN)/dubforge schema --qc -o manifests/qc.schema.json

clean:
	rm -rf demo out .pytest_cache
