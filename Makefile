# Slipway — two commands do all the set-up on a fresh Debian 12 machine (as root):
#   make run    install what is missing, start the local Slurm cluster and Slipway on :8000
#   make test   install, start a separate test cluster, run the whole suite, tear it down
SHELL := /bin/bash
VENV := .venv
CLUSTER_DIR ?= var/cluster
PORT_BASE ?= 16800
HOST ?= 127.0.0.1
PORT ?= 8000
# Container images must be readable by the job users (not under /root).
export SLIPWAY_IMAGE_CACHE ?= /var/tmp/slipway-images

.PHONY: run test deps images cluster-up cluster-down cluster-status bench clean

deps:
	@slurm_conf/install-deps

images: deps
	@container_images/build

cluster-up: deps
	@slurm_conf/cluster up --dir $(CLUSTER_DIR) --port-base $(PORT_BASE)

cluster-down:
	@slurm_conf/cluster down --dir $(CLUSTER_DIR)

cluster-status:
	@slurm_conf/cluster status --dir $(CLUSTER_DIR)

# The local cluster's nodes all listen on 127.0.0.1 (the job proxy needs their address).
run: deps images cluster-up
	@source $(CLUSTER_DIR)/env.sh && SLIPWAY_NODE_ADDRESSES="$${SLIPWAY_NODE_ADDRESSES:-*:127.0.0.1}" \
	  exec $(VENV)/bin/slipway serve --host $(HOST) --port $(PORT)

test: deps images
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: deps images cluster-up
	@source $(CLUSTER_DIR)/env.sh && for b in bench/bench_*.py; do $(VENV)/bin/python $$b; done

clean: cluster-down
	rm -rf var
