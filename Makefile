.PHONY: fuzz fuzz-ci fuzz-api

# Nightly-style: 200,000+ cases (SIAGA112_FUZZ_SCALE=20); override e.g. `make fuzz SCALE=50`.
SCALE ?= 20

fuzz:
	SIAGA112_FUZZ_SCALE=$(SCALE) ./fuzz/run.sh

# What CI runs: 10,000 cases, derandomised.
fuzz-ci:
	SIAGA112_FUZZ_SCALE=1 SIAGA112_FUZZ_RANDOM=0 ./fuzz/run.sh

# schemathesis against the OpenAPI document for 10 minutes (CI runs the same test for 25 s).
fuzz-api:
	SIAGA112_SCHEMATHESIS_S=600 .venv/bin/pytest -p no:cacheprovider -n 0 tests/integration/test_schemathesis.py
