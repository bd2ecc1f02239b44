# The two commands of the README, and a few more. CMake does the building;
# this file only strings the steps together.
BUILD      ?= build
ASAN_BUILD ?= build-asan
BENCH_BUILD?= build-release
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build demo test test-asan bench bench-build clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@MAKEFLAGS= cmake --build $(BUILD) -j$(JOBS) -- --no-print-directory

# The main job: a local federation, narrated (scripts/demo.sh).
demo: build
	@scripts/demo.sh

# Every test: unit (cmocka) and integration (real broker, real processes).
test: build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCFM_SANITIZE=ON >/dev/null
	@MAKEFLAGS= cmake --build $(ASAN_BUILD) -j$(JOBS) -- --no-print-directory
	@cd $(ASAN_BUILD) && ctest --output-on-failure -j$(JOBS)

bench-build: deps
	@cmake -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=Release -DCFM_TESTS=ON >/dev/null
	@MAKEFLAGS= cmake --build $(BENCH_BUILD) -j$(JOBS) -- --no-print-directory

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD)

# Every benchmark of bench/ (not part of `make test`, not run by CI), built
# in Release; figures and baselines: docs/performance.md.
bench: bench-build
	@CFM_BUILD=$(BENCH_BUILD) bench/run.sh
