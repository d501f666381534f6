# heapa — build, test, demo. `make test` is what CI runs (.ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.deps-stamp

.PHONY: test develop deps lint fmt rust-test py-test demo bench bench-quick clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip

# Python dependencies (test + TRL extras) from PyPI; redone when pyproject changes.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install "maturin>=1.7,<2" "numpy>=1.24" "pytest>=8" "hypothesis>=6.100" "pytest-benchmark>=4" "ruff>=0.6" "mypy>=1.10" "xxhash>=3"
	$(PIP) install "torch>=2.4" "trl>=1.10,<1.17" "transformers>=5.0" "datasets>=3" "accelerate>=1.0" \
		"math-verify>=0.7" "matplotlib>=3.8" "tqdm>=4.60"
	touch $(STAMP)

deps: $(STAMP)

# Builds the Rust extension (release) into the venv, editable.
develop: deps
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q

rust-test:
	cargo test -p heapa-core --release -q

py-test: develop
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q

lint: develop
	cargo fmt --all -- --check
	$(PY) -m mypy.stubtest heapa._heapa --allowlist .stubtest-allowlist
	cargo clippy --workspace --all-targets --release -q -- -D warnings
	$(VENV)/bin/ruff check python tests bench integration
	$(VENV)/bin/ruff format --check python tests bench integration

fmt: deps
	cargo fmt --all
	$(VENV)/bin/ruff format python tests bench integration
	$(VENV)/bin/ruff check --fix python tests bench integration

test: develop rust-test lint
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q

demo: develop
	OMP_NUM_THREADS=1 $(PY) integration/train_grpo.py --output-dir runs/demo

bench: develop
	$(VENV)/bin/heapa bench --json runs/bench.json

bench-quick: develop
	$(VENV)/bin/heapa bench --quick

clean:
	rm -rf target $(VENV) runs
