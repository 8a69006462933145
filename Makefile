# Everything a fresh machine needs, in two commands:
#   make test   installs what is missing, builds, runs GoogleTest (ctest), pytest, the
#               real-vLLM suite (make test-vllm) and the sanitizer build (make test-asan);
#               make test-fast runs only the first two
#   make demo   installs what is missing, builds, runs the router in front of simulated engines
# A second run only rebuilds what changed (the build folder is kept in build/py).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BUILD  := build/py
STAMP  := $(VENV)/.vllm-router-installed
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

DEB_PACKAGES := libboost1.81-dev libsimdjson-dev libtomlplusplus-dev libgtest-dev tmux prometheus openssl libssl-dev
BENCH_DEB_PACKAGES := wrk nginx-light
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The C++ sources, the build description and the package metadata: a change to any of them
# rebuilds the extension; Python sources need no rebuild (editable install).
BUILD_INPUTS := CMakeLists.txt pyproject.toml $(shell find cpp tests/cpp -type f 2>/dev/null)

# The real engine (tests/vllm): vLLM's CPU build in a venv of its own, and a tiny model made on
# the spot (tests/vllm/tiny_model.py), nothing downloaded.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_MODEL := build/vllm-model

.PHONY: all test test-fast test-vllm test-asan test-deploy image deploy-deps vllm-model cpp-test py-test demo deps bench-deps build bench clean

all: build

# Debian packages: checked on every run (cheap), installed only when one is missing.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_DEB_PACKAGES)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Build tools go into the venv so that the editable install can build without isolation and
# keep its CMake folder between runs.
$(VENV)/.tools: $(BIN)/python
	$(BIN)/python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" ninja
	touch $@

$(STAMP): $(VENV)/.tools $(BUILD_INPUTS) | deps
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(BIN)/python -m pip install -q --no-build-isolation \
	  -Cbuild-dir=$(BUILD) -Ccmake.define.VLLM_ROUTER_TESTS=ON -e ".[test]"
	touch $@

build: deps $(STAMP)

cpp-test: build
	cd $(BUILD) && $(abspath $(BIN))/ctest --output-on-failure -j2 --timeout 300

py-test: build
	$(BIN)/python -m pytest -q tests/py --durations=15

test-fast: cpp-test py-test

test: test-fast test-vllm test-deploy test-asan

# PyPI's torchvision, torchaudio and torchcodec need CUDA: with them `import vllm` fails
# ("operator torchvision::nms does not exist"), and vLLM runs without them.
$(VLLM_STAMP): tests/vllm/requirements.txt
	@echo "installing vLLM (CPU build) into $(VLLM_VENV): a few minutes, about 3.5 GB"
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q -r tests/vllm/requirements.txt
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

$(VLLM_MODEL)/.complete: $(VLLM_STAMP) tests/vllm/tiny_model.py
	rm -rf $(VLLM_MODEL)
	HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python tests/vllm/tiny_model.py $(VLLM_MODEL)

vllm-model: $(VLLM_MODEL)/.complete

test-vllm: build vllm-model
	VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python VLLM_MODEL_DIR=$(abspath $(VLLM_MODEL)) \
	  $(BIN)/python -m pytest -q tests/vllm --durations=15 --timeout=900

# Deployment (deploy/, tests/deploy): the container image built with Debian's podman from a
# Debian 12 base made by debootstrap (no registry is reachable here), the compose setup's
# Prometheus and the Grafana dashboard's queries, the kustomize base and the Helm chart.
# podman runs rootful with runc and cgroupfs (no systemd here); CONTAINERS_CONF points at the
# settings that needs. kubectl (for `kubectl kustomize`) comes from Debian's kubernetes-client
# unless one is installed already.
DEPLOY_DEB_PACKAGES := podman runc debootstrap uidmap
PODMAN_DIR  := build/podman
PODMAN_CONF := $(PODMAN_DIR)/containers.conf
PODMAN_ENV  := CONTAINERS_CONF=$(abspath $(PODMAN_CONF))
PODMAN      := $(PODMAN_ENV) podman
BASE_IMAGE  := localhost/debian-minbase:bookworm
IMAGE       ?= localhost/vllm-router:dev
# pip in the image build reaches PyPI through this machine's proxy: its CA bundle, as a secret.
HOST_CA     := /etc/ssl/certs/ca-certificates.crt

deploy-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEPLOY_DEB_PACKAGES)"
	@command -v kubectl >/dev/null || $(MAKE) --no-print-directory deps DEB_PACKAGES=kubernetes-client

$(PODMAN_CONF):
	mkdir -p $(PODMAN_DIR)
	printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n' > $@

image: deploy-deps $(PODMAN_CONF)
	$(PODMAN_ENV) tests/deploy/base_image.sh $(BASE_IMAGE) $(PODMAN_DIR)
	$(PODMAN) build -q --isolation=chroot --pull=never --format docker \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) $$([ -s $(HOST_CA) ] && echo --secret id=ca,src=$(HOST_CA)) \
	  -f deploy/docker/Dockerfile -t $(IMAGE) .

test-deploy: build image
	VLLM_ROUTER_IMAGE=$(IMAGE) $(PODMAN_ENV) \
	  $(BIN)/python -m pytest -q tests/deploy --durations=10 --timeout=600

# The sanitizer build: the same sources with AddressSanitizer and UndefinedBehaviorSanitizer,
# in a venv and build folder of their own; GoogleTest, then the pytest suite with the
# sanitizer runtime preloaded into Python (leak checks only for the C++ tests: CPython's own
# allocations at exit would drown them).
ASAN_VENV  := .venv-asan
ASAN_BUILD := build/asan
ASAN_STAMP := $(ASAN_VENV)/.installed
# No vptr check: it tests memory with a pipe, so when the router is out of descriptors (a case
# the tests create on purpose) it reports every virtual call as a bad type.
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize=vptr -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# Reports go to files (one per process, the routers the tests start included): pytest's output
# capture would lose a report written by a process that dies of it. Any report fails the run.
ASAN_LOG   := $(abspath $(ASAN_BUILD))/sanitizer
ASAN_ENV   := ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path=$(ASAN_LOG) \
              UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(ASAN_LOG)

$(ASAN_STAMP): $(BUILD_INPUTS) Makefile $(shell find src -name '*.py') | deps
	[ -x $(ASAN_VENV)/bin/python ] || $(PYTHON) -m venv $(ASAN_VENV)
	$(ASAN_VENV)/bin/python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" ninja
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(ASAN_VENV)/bin/python -m pip install -q --no-build-isolation \
	  -Cbuild-dir=$(ASAN_BUILD) -Ccmake.build-type=RelWithDebInfo "-Ccmake.define.CMAKE_CXX_FLAGS=$(ASAN_FLAGS)" \
	  "-Ccmake.define.CMAKE_SHARED_LINKER_FLAGS=$(ASAN_FLAGS)" "-Ccmake.define.CMAKE_EXE_LINKER_FLAGS=$(ASAN_FLAGS)" \
	  -Ccmake.define.VLLM_ROUTER_TESTS=ON ".[test]"
	touch $@

test-asan: $(ASAN_STAMP)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(abspath $(ASAN_VENV))/bin/ctest --output-on-failure -j2 --timeout 600
	rm -f $(ASAN_LOG).*
	LD_PRELOAD=$$($(CXX) -print-file-name=libasan.so):$$($(CXX) -print-file-name=libubsan.so) $(ASAN_ENV) \
	  $(ASAN_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/py --durations=15 --timeout=600; \
	status=$$?; for f in $(ASAN_LOG).*; do [ -f "$$f" ] && { echo "== sanitizer report $$f"; cat "$$f"; status=1; }; done; \
	exit $$status

demo: build
	$(BIN)/vllm-router demo

# Benchmarks (bench/): rewrites docs/benchmarks.md and its plots; under 15 minutes on 2 cores.
# BENCH_BASELINE=/path/to/other/build/.venv/bin/vllm-router adds that build to the throughput part.
$(VENV)/.bench-tools: $(BIN)/python
	$(BIN)/python -m pip install -q matplotlib
	touch $@

bench: bench-deps build $(VENV)/.bench-tools
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build $(VENV) $(VLLM_VENV) $(ASAN_VENV)
