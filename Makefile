# The test command of the README: formatting, vet, staticcheck, every test
# with the race detector, every fuzz target for a few seconds, and the
# chaos run that proves the guarantees with real processes under faults.
# Integration tests use the Redis at PREVIEWD_REDIS_URL (default
# redis://127.0.0.1:6379/0); the chaos run starts its own redis-server.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 4s

.PHONY: test
test:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt -l:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...
	go test -race -parallel 8 ./...
	FUZZTIME=$(FUZZTIME) .ci/fuzz
	go run ./cmd/previewd chaos --short

# Mutation testing (Gremlins) over the packages that carry the guarantees,
# one package at a time: each mutant rebuilds and reruns its package's
# tests against Redis, so this takes minutes per package. -count=1 keeps
# the coverage run honest (a cached run would make Gremlins' timeouts tiny).
GREMLINS := github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0
MUTATE_PKGS ?= ./csm ./tasks ./store ./worker

.PHONY: mutate
mutate:
	@for p in $(MUTATE_PKGS); do \
		echo "== gremlins $$p"; \
		GOFLAGS=-count=1 go run $(GREMLINS) unleash --workers 1 --timeout-coefficient 8 $$p || exit 1; \
	done
