# voxperf's user-facing commands. The logic lives in scripts/ (each script says what it does);
# settings come from the environment (see scripts/env.sh and README.md).
#
#   make run    install what is missing, build, start PostgreSQL + Redis, load the demo, run voxperfd
#   make test   the same set-up, then every test

SHELL := /bin/bash
S := scripts

.DEFAULT_GOAL := help
.PHONY: help deps up down psql demo run lint test bench clean-data

help:
	@echo "make run         set everything up, load the demo, run voxperfd in the foreground"
	@echo "make test        set everything up and run every test (lint, pgrx, daemon, end to end)"
	@echo "make up          install/build what is needed, start PostgreSQL and Redis, print URLs"
	@echo "make down        stop PostgreSQL and Redis"
	@echo "make psql        psql on the project database"
	@echo "make demo        reload the VoxLink demo data and run its workload"
	@echo "make lint        cargo fmt --check and clippy"
	@echo "make bench       benchmarks (bench/run.sh)"
	@echo "make deps        install missing system packages and cargo-pgrx"
	@echo "make clean-data  stop the services and delete their data"

deps:
	@$(S)/deps.sh

up:
	@$(S)/up.sh

down:
	@$(S)/redis.sh stop
	@$(S)/pg.sh stop

psql:
	@$(S)/pg.sh psql

demo:
	@$(S)/demo.sh

run:
	@$(S)/run.sh

lint:
	@$(S)/lint.sh

test:
	@$(S)/test.sh

bench:
	@if [ -x bench/run.sh ]; then bench/run.sh; \
	else echo "bench/run.sh does not exist yet" >&2; exit 1; fi

clean-data:
	@$(S)/redis.sh stop
	@$(S)/pg.sh destroy
	@rm -rf target/redis target/redis.log
