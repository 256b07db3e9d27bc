# The test command of the README: formatting, vet, staticcheck, and every
# test with the race detector. Integration tests use the Redis at
# PREVIEWD_REDIS_URL (default redis://127.0.0.1:6379/0).
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test
test:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt -l:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...
	go test -race -parallel 8 ./...
