# Thin wrapper for the two README commands; the build itself is CMake.
#   make run    install what is missing (as root), build, train the seed's Keras job locally
#   make test   install what is missing (as root), build, run the whole suite through ctest
#   make fuzz   the same with clang, then each libFuzzer target for FUZZ_SECONDS (tests/fuzz)
#   make deploy-test  (root) the Docker Compose cluster end to end: engine, images, a 2+2 job
#                     (tests/deploy/run.sh; skips where Docker cannot run)
# Variables: BUILD (build dir), PS_WERROR=ON, PS_SANITIZE=address,undefined, JOBS.

BUILD       ?= build
PS_WERROR   ?= OFF
PS_SANITIZE ?=
JOBS        ?= 2
CMAKE_BUILD_TYPE ?= RelWithDebInfo
FUZZ_SECONDS ?= 60

DEBS := cmake make gcc pkg-config libuv1-dev nanopb libnanopb-dev libcjson-dev \
        libcriterion-dev zlib1g-dev libopenblas-dev libsodium-dev libssl-dev \
        dataset-fashion-mnist

FUZZ_DEBS := clang libclang-rt-14-dev

.PHONY: all deps build run test bench fuzz deploy-test clean

all: build

deps:
	@missing=$$(for p in $(DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing Debian packages; run:"; \
	    echo "  sudo apt-get install -y $$missing"; \
	    exit 1; \
	  fi; \
	fi

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(CMAKE_BUILD_TYPE) -DPS_WERROR=$(PS_WERROR) \
	  -DPS_SANITIZE=$(PS_SANITIZE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/ps-launch examples/keras_seed.json

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: deps
	@cmake -S . -B $(BUILD)-release -DCMAKE_BUILD_TYPE=Release -DPS_BUILD_TESTS=OFF >/dev/null
	bash tests/bench/run_bench.sh $(BUILD)-release

# build-fuzz: everything instrumented (libFuzzer coverage, ASan, UBSan), only the fuzz targets built
fuzz:
	@$(MAKE) --no-print-directory deps DEBS="$(DEBS) $(FUZZ_DEBS)"
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DPS_FUZZ=ON -DPS_BUILD_TESTS=OFF \
	  -DPS_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzz_all
	bash tests/fuzz/run_fuzz.sh build-fuzz $(FUZZ_SECONDS)

deploy-test:
	bash tests/deploy/run.sh

clean:
	rm -rf $(BUILD) $(BUILD)-release
