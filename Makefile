# The two commands users need: `make run` and `make test`. The rest are steps.
.PHONY: run test build bench fuzz clean

run: ## run the MCP server locally (Azurite + handler, auth off)
	bash scripts/run-local.sh

test: ## run the whole test suite
	bash scripts/test.sh

build: ## stage the deployable Functions package in dist/
	go run ./scripts/stage -out dist

bench: ## benchmark report (tools/call throughput, start-up time)
	bash scripts/bench.sh

FUZZTIME ?= 30s
fuzz: ## run every fuzz target for FUZZTIME each
	bash scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf dist bin .run
