# trackd — see README.md. Set-up is two commands: `make run` and `make test`.
GO          ?= go
PLUGINS     := $(notdir $(wildcard plugins/*))
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

.PHONY: build run test test-cluster bench lint fuzz proto clean

## build: bin/trackd and bin/plugins/<name> for every plugin
build:
	$(GO) build -o bin/trackd ./daemon
	@for p in $(PLUGINS); do echo "$(GO) build -o bin/plugins/$$p ./plugins/$$p"; $(GO) build -o bin/plugins/$$p ./plugins/$$p || exit 1; done

## run: the daemon with an embedded NATS server and config.toml
run: build
	./bin/trackd run --config config.toml

## test: the whole suite, race detector on (tests build the binaries they need)
test:
	$(GO) test -race -count=1 -timeout 20m ./...

## test-cluster: the tests on an in-process 3-node NATS cluster (about 90 s; build tag cluster)
test-cluster:
	$(GO) test -race -count=1 -tags cluster -run '^TestCluster' ./daemon

## bench: micro-benchmarks, then the end-to-end ones (about 8 minutes, never with -race);
## the summary lines for BENCHMARKS.md come last
bench:
	@out=$$(mktemp); \
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -vx trackd.dev/trackd/daemon) 2>&1 | tee $$out; \
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./daemon 2>&1 | tee -a $$out; \
	echo; grep '^bench:' $$out; ! grep -q '^FAIL' $$out; status=$$?; rm -f $$out; exit $$status

## fuzz: fuzz validate+normalize, then the tracking API's request handling (body, gzip, batch
## split and merge), each for FUZZTIME (default 2m); make test runs their seeds
FUZZTIME ?= 2m
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzNormalize -fuzztime $(FUZZTIME) ./daemon/internal/normalize
	$(GO) test -run '^$$' -fuzz FuzzRequest -fuzztime $(FUZZTIME) ./daemon/internal/trackapi

## lint: gofmt, go vet and staticcheck
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags cluster ./daemon
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags cluster ./daemon

## proto: regenerate sdk/destinationpb from destination.proto (installs protoc and the pinned generators)
proto:
	command -v protoc >/dev/null 2>&1 || { apt-get update && apt-get install -y protobuf-compiler; }
	GOBIN=$(CURDIR)/bin/tools $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/bin/tools $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH="$(CURDIR)/bin/tools:$$PATH" $(GO) generate ./sdk/destinationpb

clean:
	rm -rf bin
