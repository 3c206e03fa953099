# The two commands of the README: `make serve` and `make test`.
# Each creates the virtual environment it needs (.venv) from the pinned pyproject.toml.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test audit lint train train-refusal eval bench bench-slow clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3

# llama-cpp-python (the local-llm extra) is built from source: a few minutes the first time,
# then pip's wheel cache. GGML_NATIVE=OFF keeps the built wheel portable across CPUs.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local-llm]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,train,local-llm,ray,multilingual,ecosystem]'
	touch $@ $(VENV)/.runtime

## Run the service on embedded defaults (no API key, no network): http://127.0.0.1:8080/v1
## (moderation, and the guarded chat gateway in front of the bundled local model)
serve: $(VENV)/.runtime
	$(BIN)/seawall serve

## Run the whole test suite (lint, types, tests). pytest's "no tests collected" (5) is a failure.
# The OIDC sign-in tests run npm's oidc-provider (pinned in tests/oidc/package-lock.json).
tests/oidc/node_modules: tests/oidc/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error; \
	  else echo "npm not found: the OIDC tests will skip (under CI they fail)"; fi

test: $(VENV)/.dev tests/oidc/node_modules
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

## Audit the installed pins (runtime, dev, train, local-llm, ray, multilingual, ecosystem and what
## they pull in) for known vulnerabilities with pip-audit and PyPI's advisories; fails on any that a newer release fixes.
## Needs PyPI's advisory data: pins it cannot check are reported NOT CHECKED, and fail only with
## SEAWALL_AUDIT_REQUIRED=1 (CI's network reaches the package index but not the advisories).
audit: $(VENV)/.dev
	$(BIN)/python .ci/audit_deps.py

## Retrain the embedded model's English stages from ../shared/data and the authored data, keeping the
## shipped multilingual stage, as the shipped model was built (`seawall train --multilingual train` refits it).
train: $(VENV)/.dev
	$(BIN)/seawall train --data ../shared/data --multilingual keep

## Rebuild the shipped refusal classifier as it was built (the twenty-first round, refusal model card): the
## encoder fine-tuned (2 passes, about 25 minutes on 2 CPU cores; kept in the fine-tune store) and the head
## fitted on the authored answers, the short product-bot and short professional-pointer candidates and the
## spent held-out sets 1-30; the threshold chosen on sets 31 and 32, which neither learned.
REFUSAL_LEARNED_SETS := bench/data/refusals_heldout.jsonl \
  $(foreach n,$(shell seq 2 30),bench/data/refusals_heldout$(n).jsonl)
REFUSAL_THRESHOLD_SETS := $(foreach n,31 32,bench/data/refusals_heldout$(n).jsonl)
train-refusal: $(VENV)/.dev
	$(BIN)/seawall redteam train-refusal --answers data/authored/refusals \
	  --answers data/authored/refusals/candidates/thirteenth_round_short_support.jsonl \
	  --answers data/authored/refusals/candidates/twenty_first_round_short_pointers.jsonl \
	  $(addprefix --answers ,$(REFUSAL_LEARNED_SETS)) --finetune-epochs 2 \
	  $(addprefix --threshold-from ,$(REFUSAL_THRESHOLD_SETS))

## Benchmarks: moderation speed and quality, gateway overhead, routing quality, red-team speed,
## batch moderation (single process and Ray).
bench: $(VENV)/.dev
	$(BIN)/python bench/moderation_api.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/multilingual.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/gateway.py --quick --realistic --streams 10
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/audit_durability.py
	$(BIN)/python bench/topics.py
	$(BIN)/python bench/redteam.py
	$(BIN)/python bench/user_tokens.py
	$(BIN)/python bench/batch.py

## Slow benchmarks: leave-one-source-out retraining (hours on 2 cores) and a 10-minute soak.
bench-slow: $(VENV)/.dev
	$(BIN)/python bench/loso.py --data ../shared/data
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
