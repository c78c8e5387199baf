# The two commands users need: `make run` and `make test`. The rest are steps.
.PHONY: run test build dist gateway gateway-check bench fuzz clean

AUTH ?= on
run: ## run the whole system locally: Azurite, handler, Entra stand-in, gateway on :8000 (AUTH=off: the handler alone, no sign-in)
	AUTH=$(AUTH) bash scripts/run-local.sh

test: ## run the whole test suite
	bash scripts/test.sh

build: dist gateway ## stage dist/ and compile the local API Management gateway

dist: ## stage the deployable Functions package in dist/
	go run ./scripts/stage -out dist

gateway: ## compile the local API Management gateway (installs Mono on Debian/Ubuntu)
	bash scripts/mono.sh
	bash apim-policies/gateway/build.sh

MANIFEST ?= apim-policies/apis.json
NAMED_VALUES ?= .run/named-values.json
gateway-check: gateway ## list every problem of a policy bundle (MANIFEST, NAMED_VALUES)
	mono apim-policies/gateway/bin/gateway.exe check --manifest $(MANIFEST) --named-values $(NAMED_VALUES)

bench: ## benchmark report (tools/call throughput, start-up time)
	bash scripts/bench.sh

FUZZTIME ?= 30s
fuzz: ## run every fuzz target for FUZZTIME each
	bash scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf dist bin .run apim-policies/gateway/bin
