# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow s3-up s3-down bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolve pulls a CUDA build of several GB on CPU hosts
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python jobs/map_region.py --aoi examples/flanders_31UDS.geojson --uncertainty

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# A loopback S3 server holding the bundled archive (for trying s3:// paths by hand).
s3-up: $(STAMP)
	$(BIN)/python -m lssr_ray.data.s3server start --port 9100 --load-archive

s3-down: $(STAMP)
	$(BIN)/python -m lssr_ray.data.s3server stop --port 9100

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) out runs .pytest_cache
