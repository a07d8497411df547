# onemodel: one short target per job. `make serve` and `make test` set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# The KServe SDK, a client the e2e tests drive, pins psutil, python-dateutil and protobuf
# below this project's versions: it gets a virtualenv of its own, used only by
# tests/support/kserve_probe.py (pinned in constraints-kserve.txt).
KSERVE_VENV ?= .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.installed
ENGINE_UP := ../shared/container/engine-up

.PHONY: help install serve test test-fast lint dist bench bench-quick bench-engines precision soak fuzz docker constraints clean kserve-venv grpc-stubs bench-protocols

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[model,test,bench,dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with every extra

$(KSERVE_STAMP): constraints-kserve.txt
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KSERVE_VENV)/bin/python -m pip install --quiet -c constraints-kserve.txt kserve
	touch $(KSERVE_STAMP)

kserve-venv: $(KSERVE_STAMP)  ## create .venv-kserve: the KServe SDK for the e2e client tests

grpc-stubs: $(STAMP)  ## regenerate the gRPC protobuf code from src/onemodel/grpc_server/*.proto
	$(PY) scripts/generate_grpc_stubs.py

serve: $(STAMP)  ## run the service on http://127.0.0.1:8000 (Gunicorn starts the model server)
	@echo "onemodel: loading the model, then serving on http://$${HOST:-127.0.0.1}:$${PORT:-8000}"
	@echo "  try: curl -F file=@photo.jpg http://127.0.0.1:$${PORT:-8000}/predict"
	@echo "  offline? MODEL_WEIGHTS=random make serve (meaningless predictions, for demos)"
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

test: lint $(KSERVE_STAMP)  ## lint, set up browser and container engine (if possible), run the whole suite
	@bash scripts/test-setup.sh
	@if [ -z "$${DOCKER_HOST:-}" ] && [ -S /var/tmp/container-engine/podman.sock ]; then \
	  export DOCKER_HOST=unix:///var/tmp/container-engine/podman.sock; fi; \
	  KSERVE_PYTHON=$(abspath $(KSERVE_VENV))/bin/python $(PY) -m pytest

test-fast: $(STAMP)  ## unit and integration tests only (seconds)
	$(PY) -m pytest tests/unit tests/integration

LINTED := src tests bench scripts wsgi.py model_server.py gunicorn.conf.py

lint: $(STAMP)  ## ruff format --check, ruff check and mypy --strict src (pinned tools)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m mypy --strict src

dist: $(STAMP)  ## build the sdist and the wheel users install (python -m build) into dist/
	rm -rf dist && $(PY) -m build --outdir dist .

bench: $(STAMP)  ## full benchmark (~27 min on a calm 2-core machine): docs/benchmarks.md, bench/results/latest.*
	$(PY) bench/run.py

bench-quick: $(STAMP)  ## quick benchmark (< 4 min)
	$(PY) bench/run.py --quick

bench-engines: $(STAMP)  ## TensorFlow vs OpenVINO per precision only (~10 min; first run converts: more)
	$(PY) bench/run.py --engines-only

bench-protocols: $(STAMP)  ## gRPC beside HTTP at 1/8/16 clients, tiny model (~5 min): bench/results/protocols.json
	$(PY) bench/protocols.py

.PHONY: bench-startup
bench-startup: $(STAMP)  ## warm start and kill -9 recovery, TensorFlow vs warm OpenVINO, 3 models (~10 min): bench/results/startup.json
	cd bench && $(abspath $(PY)) -c 'import assets; assets.ensure_tiny_model(); assets.ensure_application_model("efficientnetb0")'
	$(PY) bench/startup.py --model bench/.cache/tiny.keras --model bench/.cache/efficientnetb0.keras \
		--model vgg16 --engine tensorflow --engine openvino --repeats 2 \
		--cache-dir bench/.cache/model-cache --out bench/results/startup.json

.PHONY: bench-pool
bench-pool: $(STAMP)  ## one vs two model servers, kill -9 and SIGTERM under load (~5 min): bench/results/pool.json
	$(PY) bench/pool.py

precision: $(STAMP)  ## float32 vs bfloat16 on 120 varied images (~3 min): bench/results/precision.json
	$(PY) scripts/precision_accuracy.py

soak: $(STAMP)  ## mixed good and bad traffic for 2 minutes on 127.0.0.1; RSS drift report
	$(PY) scripts/soak.py --duration-s 120

fuzz: $(STAMP)  ## mutation-fuzz the image decoders: make fuzz FUZZ_SECONDS=300 FUZZ_FORMAT=png
	PYTHONPATH=$(CURDIR)/src:$(CURDIR) $(PY) scripts/fuzz_images.py \
	  --seconds $${FUZZ_SECONDS:-120} --format $${FUZZ_FORMAT:-all}

docker:  ## build the container image (bakes the VGG16 ImageNet weights)
	docker build -t onemodel:latest .

constraints: $(STAMP)  ## re-pin constraints.txt from the current .venv
	$(PIP) freeze --exclude-editable | grep -v '^onemodel' > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) $(KSERVE_VENV) .pytest_cache tests/artifacts dist build
