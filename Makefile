# Slipway — two commands do all the set-up on a fresh Debian 12 machine (as root):
#   make run    install what is missing, start the local Slurm cluster and Slipway on :8000
#   make test   install, start a separate test cluster, run the whole suite, tear it down
#
# Variables (make run PORT=8101 CLUSTER_DIR=var/cluster-2 PORT_BASE=16850 runs a second Slipway
# beside the first, with its own cluster, database and URL):
#   HOST, PORT            where `slipway serve` listens (127.0.0.1, 8000); git hooks and jobs
#                         call it back at http://HOST:PORT unless SLIPWAY_BASE_URL is set
#   CLUSTER_DIR           the local Slurm cluster's state dir (var/cluster)
#   PORT_BASE             first of the cluster's ports (16800; it uses PORT_BASE..PORT_BASE+12)
#   DATA_DIR              Slipway's data dir: database, secrets, repos, jobs (CLUSTER_DIR/data);
#                         written to CLUSTER_DIR/env.sh as SLIPWAY_DATA_DIR, so after
#                         `source CLUSTER_DIR/env.sh` the slipway CLI uses the same database
#   SLIPWAY_IMAGE_CACHE   built container images, readable by job users (/var/tmp/slipway-images)
#   PYTEST_ARGS           arguments for `make test` (e.g. PYTEST_ARGS="tests/unit -x")
#   TEST_WORKERS          pytest-xdist workers for `make test` (3; 0: one process)
# A real install outside make run keeps its data in /var/lib/slipway (SLIPWAY_DATA_DIR).
SHELL := /bin/bash
VENV := .venv
CLUSTER_DIR ?= var/cluster
PORT_BASE ?= 16800
DATA_DIR ?= $(CLUSTER_DIR)/data
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_WORKERS ?= 3
# Container images must be readable by the job users (not under /root).
export SLIPWAY_IMAGE_CACHE ?= /var/tmp/slipway-images

.PHONY: run test deps images cluster-up cluster-down cluster-status bench clean

deps:
	@slurm_conf/install-deps

images: deps
	@container_images/build

cluster-up: deps
	@slurm_conf/cluster up --dir $(CLUSTER_DIR) --port-base $(PORT_BASE) --data-dir $(DATA_DIR)

cluster-down:
	@slurm_conf/cluster down --dir $(CLUSTER_DIR)

cluster-status:
	@slurm_conf/cluster status --dir $(CLUSTER_DIR)

# The local cluster's nodes all listen on 127.0.0.1 (the job proxy needs their address).
# env.sh sets SLIPWAY_DATA_DIR (DATA_DIR); serve derives its public URL from HOST and PORT.
run: deps images cluster-up
	@source $(CLUSTER_DIR)/env.sh && SLIPWAY_NODE_ADDRESSES="$${SLIPWAY_NODE_ADDRESSES:-*:127.0.0.1}" \
	  exec $(VENV)/bin/slipway serve --host $(HOST) --port $(PORT)

# The suite runs on TEST_WORKERS pytest-xdist workers, whole modules per worker (a module's
# Slipway and cluster fixtures start once); each worker starts its own test cluster
# (tests/conftest.py). TEST_WORKERS=0 runs it in this one process.
test: deps images
	@$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: deps images cluster-up
	@source $(CLUSTER_DIR)/env.sh && for b in bench/bench_*.py; do $(VENV)/bin/python $$b; done

clean: cluster-down
	rm -rf var
