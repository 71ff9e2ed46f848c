.PHONY: fuzz fuzz-ci fuzz-api chaos pg-outage

# Nightly-style: 200,000+ cases (SIAGA112_FUZZ_SCALE=20); override e.g. `make fuzz SCALE=50`.
SCALE ?= 20

fuzz:
	SIAGA112_FUZZ_SCALE=$(SCALE) ./fuzz/run.sh

# What CI runs: 10,000 cases, derandomised.
fuzz-ci:
	SIAGA112_FUZZ_SCALE=1 SIAGA112_FUZZ_RANDOM=0 ./fuzz/run.sh

# Chaos, long form: issue 18's load at twice the rate: 240 callers at 2/s for 2 minutes, each
# pressing 2 at 3 s and staying 10 s, 40 operators on one SIPp phone, the app SIGKILLed every
# ~7 s and restarted at once; stops by itself (~3 min). CI runs the short form (24 callers, a
# kill every ~3 s). Override e.g. `make chaos CHAOS_CALLS=600 CHAOS_RATE=3`.
CHAOS_CALLS ?= 240
CHAOS_RATE ?= 2
CHAOS_KILL_EVERY_S ?= 7
chaos:
	SIAGA112_CHAOS_CALLS=$(CHAOS_CALLS) SIAGA112_CHAOS_RATE=$(CHAOS_RATE) \
	SIAGA112_CHAOS_KILL_EVERY_S=$(CHAOS_KILL_EVERY_S) SIAGA112_CHAOS_OPERATORS=40 \
	SIAGA112_CHAOS_KEY_MS=3000 SIAGA112_CHAOS_STAY_MS=10000 \
	.venv/bin/pytest -p no:cacheprovider -n 0 -s tests/integration/test_chaos.py

# PostgreSQL stopped under load, long form: 120 callers at 1/s, a private cluster stopped with
# `pg_ctl stop -m fast` for 60 s and started again (CI: 12 callers, 8 s).
PG_STOP_CALLS ?= 120
PG_STOP_S ?= 60
pg-outage:
	SIAGA112_PG_STOP_CALLS=$(PG_STOP_CALLS) SIAGA112_PG_STOP_S=$(PG_STOP_S) \
	.venv/bin/pytest -p no:cacheprovider -n 0 -s tests/integration/test_db_outage.py -k stopped_fast

# schemathesis against the OpenAPI document for 10 minutes (CI runs the same test for 25 s).
fuzz-api:
	SIAGA112_SCHEMATHESIS_S=600 .venv/bin/pytest -p no:cacheprovider -n 0 tests/integration/test_schemathesis.py
