# Everything a fresh machine with Python 3.11 and pip needs:
#   make demo   create .venv, install Keras and one backend, train plain vs.
#               family members on MNIST
#   make test   create .venv, install, lint, build the docs (strict), run the
#               suite on every backend
#   make docs   build the documentation site into site/ (strict)
#
# CPU builds by default. TORCH_SPEC is installed before the package so that
# the `torch` requirement is already met by a CPU build (a bare `torch`
# requirement pulls the CUDA build and GBs of GPU packages). For a GPU:
#   make install EXTRAS=gpu,dev TORCH_SPEC=torch

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= cpu,all,dev,docs
KERAS_FLOOR ?= 3.10.0
FLOOR_BACKENDS ?= tensorflow jax
TORCH_SPEC ?= torch==2.13.0
BACKENDS ?= torch tensorflow jax
DEMO_BACKEND ?= jax
DOCTEST_BACKEND ?= tensorflow
PYTEST_ARGS ?= --durations=15

BIN := $(VENV)/bin
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
FLOOR_STAMP := .keras-floor/.installed-$(KERAS_FLOOR)

# Real datasets live beside the project, never inside it.
ifeq ($(origin KERAS_GRADREG_DATA),undefined)
  ifneq ($(wildcard ../shared/data),)
    export KERAS_GRADREG_DATA := $(abspath ../shared/data)
  endif
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: install test test-keras-range lint format docs demo bench bench-legacy bench-legacy-setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	# The independent AutoAttack implementations the tests compare the attacks
	# with: torchattacks, and AutoAttack's own code (pyautoattack: l1-APGD and
	# the EOT APGD). torchattacks' metadata requires torchvision, which it
	# never imports and which has no CPU build here: both are installed
	# without dependencies (scipy and tqdm, the ones they use, come with the
	# environment).
	$(BIN)/python -m pip install --quiet --no-deps "torchattacks==3.5.1" "pyautoattack==0.2.0"
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check keras_gradreg tests examples benchmarks reproductions
	$(BIN)/ruff format --check keras_gradreg tests examples benchmarks reproductions

format: $(STAMP)
	$(BIN)/ruff check --fix keras_gradreg tests examples benchmarks reproductions
	$(BIN)/ruff format keras_gradreg tests examples benchmarks reproductions

# Warnings (broken links, docstrings that do not match signatures) fail it.
# (Not --quiet: it hides the warnings from strict mode, which then passes.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# One pytest process per backend: Keras fixes its backend at import. The
# docstring examples run once, on DOCTEST_BACKEND. TEST_JOBS processes run
# at once, each run's output printed whole when it ends. The backends in
# SPLIT_BACKENDS run as two processes, CORE_TESTS (`jax-core`) and the rest
# (`jax-rest`: evaluation, tools, the scripts end to end), so that the runs,
# longest first, fill the two lanes evenly: on 2 cores torch's and
# TensorFlow's runs start (about 15 and 19 min beside each other), JAX's
# halves (13 and 11) follow, the two Keras-floor runs (3 and 2) go to
# whichever lane frees first. The JAX runs share one compilation cache
# (tests/conftest.py), emptied here: the floor's programs are mostly the
# core tests'.
TEST_JOBS ?= 2
# torch's OpenMP threads spin while they wait: two of them beside another
# run on 2 cores made its scripts 3-7 times slower; one thread per run.
TORCH_TEST_THREADS ?= 1
SPLIT_BACKENDS ?= jax
CORE_TESTS ?= tests/training tests/family tests/maxout
TEST_RUNS := $(foreach b,$(BACKENDS),$(if $(filter $(b),$(SPLIT_BACKENDS)),$(b)-core $(b)-rest,$(b))) \
	$(addprefix floor-,$(FLOOR_BACKENDS))
test: lint docs $(FLOOR_STAMP)
	@rm -rf .test-logs; mkdir -p .test-logs; \
	export JAX_COMPILATION_CACHE_DIR="$(CURDIR)/.test-logs/jax-cache"; \
	printf '%s\n' $(TEST_RUNS) | xargs -P $(TEST_JOBS) -I{} sh -c '\
	  backend=$${0%-core}; backend=$${backend%-rest}; doctests=""; \
	  [ $$backend = torch ] && export OMP_NUM_THREADS=$(TORCH_TEST_THREADS); \
	  case {} in \
	    *-core) paths="$(CORE_TESTS)" ;; \
	    *-rest) paths="tests $(addprefix --ignore=,$(CORE_TESTS))" ;; \
	    *) paths=tests ;; \
	  esac; \
	  case {} in *-core) ;; *) [ $$backend = "$(DOCTEST_BACKEND)" ] && doctests="--doctest-modules keras_gradreg" ;; esac; \
	  case {} in \
	    floor-*) $(MAKE) --no-print-directory test-keras-range FLOOR_BACKENDS=$${0#floor-} ;; \
	    *) KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q $$paths $$doctests $(PYTEST_ARGS) ;; \
	  esac > .test-logs/{}.log 2>&1; rc=$$?; echo $$rc > .test-logs/{}.rc; \
	  echo "=== {} (exit $$rc) ==="; cat .test-logs/{}.log' {}; \
	status=0; for run in $(TEST_RUNS); do \
	  [ "$$(cat .test-logs/$$run.rc 2>/dev/null)" = 0 ] || { echo "FAILED: $$run"; status=1; }; \
	done; exit $$status

# The core tests again on the oldest Keras that pyproject.toml admits, so a
# release that moves a private name the library uses (keras_gradreg/src/
# keras_compat.py) fails here rather than for a user. Keras alone goes in a
# side folder ahead of the environment's. torch is left out: Keras 3.10's own
# code fails under torch.compile with torch 2.13. The finite-at-zero-gradient
# cases are left out too: they test the norms' arithmetic, not Keras.
$(FLOOR_STAMP): | $(STAMP)
	rm -rf .keras-floor
	$(BIN)/python -m pip install --quiet --no-deps --target .keras-floor "keras==$(KERAS_FLOOR)"
	touch $@

test-keras-range: $(FLOOR_STAMP)
	@status=0; for backend in $(FLOOR_BACKENDS); do \
	  echo "=== keras $(KERAS_FLOOR), KERAS_BACKEND=$$backend ==="; \
	  PYTHONPATH=.keras-floor KERAS_BACKEND=$$backend $(BIN)/python -c \
	    "import keras; assert keras.__version__ == '$(KERAS_FLOOR)', keras.__version__" \
	  && PYTHONPATH=.keras-floor KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q \
	    tests/training/test_gradients.py tests/training/test_models.py tests/family/test_inputs.py \
	    -k "not zero_input_gradient" $(PYTEST_ARGS) || status=1; \
	done; exit $$status

# The demo needs Keras and its one backend only (about 25 s to install,
# against 1.5 min for everything); `make install` adds the rest.
DEMO_STAMP := $(VENV)/.installed-demo-$(DEMO_BACKEND)
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(if $(filter torch,$(DEMO_BACKEND)),$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/python -m pip install --quiet -e ".[$(DEMO_BACKEND)]"
	touch $@

demo: $(DEMO_STAMP)
	KERAS_BACKEND=$(DEMO_BACKEND) $(BIN)/python examples/demo_mnist.py

bench: $(STAMP)
	$(BIN)/python benchmarks/step_cost.py

# Neural Structured Learning on legacy tf.keras, for
# benchmarks/vs_legacy_adversarial.py only: a folder of its own, outside
# the project's environment.
bench-legacy-setup: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target .bench-legacy \
	  "tf-keras==$$($(BIN)/python -c 'import tensorflow as t; print(t.__version__)')" \
	  neural-structured-learning==1.4.0

# The comparison with NSL as docs/performance.md records it (MNIST from
# $$KERAS_GRADREG_DATA; pause other jobs: it times throughput).
bench-legacy: bench-legacy-setup
	$(BIN)/python benchmarks/vs_legacy_adversarial.py --rounds 7 --train-limit 19200 --with-plain

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache site
