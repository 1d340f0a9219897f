# Setup is self-contained: every target creates or updates the local virtual environment first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Render the bundled example with tiny random components on the CPU (no download): about a minute from a
# fresh clone on 2 idle cores, most of it creating the virtual environment; the render itself about 10 s.
demo: $(STAMP)
	$(VENV)/bin/mirage render examples/room/scene.yaml --preset tiny --out runs/demo

# One pytest worker per core, one torch thread per worker (and per render it starts): the workers
# fill the cores, and threads that outnumber them only wait on each other.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile

bench: $(STAMP)
	$(VENV)/bin/mirage bench --preset tiny

clean:
	rm -rf runs examples/*/runs .pytest_cache
