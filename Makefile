# One command each: `make demo`, `make test`. Both create .venv and install on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test test-fast install clean bench serve bench-peers

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# PyLate (the ColBERT oracle of tests/test_multivector_encoder.py) pins older sentence-transformers / torch:
	# installed without its dependencies, which the test extra already provides
	$(BIN)/pip install --quiet --no-deps pylate==1.6.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0
	# headless Chromium for the web page's browser tests (Debian packages; skipped when apt is not usable)
	-bash .ci/install-browser
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/encoderkit demo

# 2 pytest-xdist workers, one torch thread each; a test module stays on one worker, long trainings are split
# off, longest groups first (tests/conftest.py).
# XDIST="-p no:xdist" runs serially; XDIST="-n 4 --dist loadgroup" for more cores.
XDIST   ?= -n 2 --dist loadgroup

test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

serve: $(STAMP)
	$(BIN)/encoderkit serve --model all-MiniLM-L6-v2 --host 127.0.0.1 --port 8080

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/encode_throughput.py

# infinity-emb, the peer server of benchmarks/serve_load.py, in its own venv: it pins numpy<2 and older uvicorn /
# huggingface_hub / typer, which conflict with encoderkit's; serve_load.py starts it from there as a subprocess
PEERS   := .venv-bench-infinity
bench-peers: $(PEERS)/bin/infinity_emb

$(PEERS)/bin/infinity_emb:
	test -x $(PEERS)/bin/python || $(PY) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet torch==2.13.0
	$(PEERS)/bin/pip install --quiet 'infinity-emb[server,torch,optimum]==0.0.78'

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info src/*.egg-info
