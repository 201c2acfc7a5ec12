# fairexpr — two commands: `make demo` and `make test`. Both create .venv and install everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# PyTorch for this machine's local wheels (CPU use). With a GPU, install the matching CUDA build instead,
# e.g. `make TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cu124" test`.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.fairexpr-installed

.PHONY: demo test install browser clean bench zoo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[export,serve,test,faces,demo]"
	@touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the one end-to-end browser test of `fairexpr serve`.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  (sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive sudo apt-get install -y -qq chromium >/dev/null); }

demo: $(STAMP)
	$(VENV)/bin/fairexpr demo --out demo_out

test: $(STAMP) browser
	$(PY) -m pytest -q

# Rebuild every packaged model (src/fairexpr/zoo/, entries in index.json, each trained after the entry it starts
# from), then packing, evaluation and the model cards. Needs the datasets:
# FAIREXPR_DATA=../shared/data make zoo [ZOO_ARGS=--resume]
zoo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) benchmarks/build_zoo.py --all $(ZOO_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_baselines.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
