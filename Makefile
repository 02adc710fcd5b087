# skyrig — two commands on a fresh machine:
#   make run    the main job: `skyrig up --stack local`
#   make test   every test tier this machine can run
# Both create .venv and install what they need on first use; a stamp keeps later calls fast.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-installed
WORKLOAD := workloads/qso_anomaly
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider
# unit and integration tests are independent (free ports, tmp state): one worker per core
XDIST ?= -n auto --dist loadfile
export CONTAINERS_CONF := $(CURDIR)/tests/images/containers.conf
export RAY_AUTH_MODE := disabled
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := 1

.PHONY: venv run test lint test-unit test-integration test-workload test-roles test-vm \
        test-fast bench clean-state help

help:
	@echo "make run        skyrig up --stack local (pvesim, provisioning, local Ray, workload)"
	@echo "make test       lint + unit + integration + workload + roles (podman) + VM tier (QEMU)"
	@echo "make test-fast  lint + unit + integration + workload (no podman, no QEMU)"
	@echo "make bench      run the benchmarks in benchmarks/ and print JSON"

$(STAMP): requirements/base.txt pyproject.toml pvesim/pyproject.toml $(wildcard $(WORKLOAD)/pyproject.toml)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed: installing python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: pip takes the local CPU wheel; unpinned torch pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements/base.txt
	$(BIN)/pip install -q --no-deps -e pvesim
	$(BIN)/pip install -q --no-deps -e .
	if [ -f $(WORKLOAD)/pyproject.toml ]; then $(BIN)/pip install -q --no-deps -e $(WORKLOAD); fi
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

venv: $(STAMP)

run: venv
	$(BIN)/skyrig up --stack local

lint: venv
	$(BIN)/ruff check src tests benchmarks pvesim $(WORKLOAD)/src
	$(BIN)/mypy src pvesim/src
	if [ -d roles ]; then $(BIN)/yamllint -s roles playbooks stacks && \
	  $(BIN)/ansible-lint --profile production -q roles playbooks; fi

test-unit: venv
	$(PYTEST) $(XDIST) -m "unit" tests pvesim/tests

test-integration: venv
	$(PYTEST) $(XDIST) -m "integration and not roles and not vm and not gpu" tests pvesim/tests

test-workload: venv
	if [ -d $(WORKLOAD)/tests ]; then $(PYTEST) $(WORKLOAD)/tests; fi

test-roles: venv
	bash tests/images/setup-podman.sh
	bash tests/images/build-debian12-systemd.sh
	$(PYTEST) -m "roles" tests

test-vm: venv
	bash tests/images/setup-podman.sh --vm
	bash tests/images/build-vm-image.sh
	$(PYTEST) -m "vm" tests

test-fast: lint test-unit test-integration test-workload

test: test-fast test-roles test-vm

bench: venv
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-state:
	rm -rf .skyrig

# The workload image, CPU variant, from the project's Debian base (no registry pulls); versions
# come from the stack (STACK, default prod) and the compatibility matrix. Tag <version>-cpu.
STACK ?= prod
IMAGE_REPO ?= localhost/skyrig/qso-anomaly
.PHONY: image-cpu
image-cpu: venv
	bash tests/images/setup-podman.sh
	bash tests/images/build-debian12-systemd.sh
	args="$$($(BIN)/python -c "from skyrig.config import load_stack; \
	  c = load_stack('$(STACK)').config; w = c.workload; \
	  print(f'--build-arg WORKLOAD_VERSION={w.version} --build-arg RAY_VERSION={c.ray.version}' \
	        f' --build-arg TORCH_VERSION={w.torch_version} --build-arg JAX_VERSION={w.jax_version}' \
	        f' --build-arg CUDA_VERSION={c.gpu_stack.cuda_version} --tag $(IMAGE_REPO):{w.version}-cpu')")"; \
	podman build --network host --pull=never --build-arg VARIANT=cpu $$args \
	  -f $(WORKLOAD)/Containerfile $(WORKLOAD)
