# Thin wrapper over the CMake presets (CMakePresets.json). Logic lives in CMake.
PRESET ?= dev
JOBS   ?= $(shell nproc)
BUILD  := build/$(PRESET)

.PHONY: all deps test-deps build run test asan ci release bench bench-intake bench-sources bench-exec bench-pipeline format format-check lint clean

all: build

deps:
	@cmake/install-deps.sh

test-deps:
	@cmake/install-deps.sh --test

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET) -j $(JOBS)

# Start the daemon on its embedded defaults with the example policies.
run: build
	@$(BUILD)/vigil run --policies examples/policies --hello

test: test-deps
	@$(MAKE) --no-print-directory build
	@ctest --preset $(PRESET) -j $(JOBS)

asan:
	@$(MAKE) --no-print-directory test PRESET=asan

ci:
	@$(MAKE) --no-print-directory test PRESET=ci

release:
	@$(MAKE) --no-print-directory build PRESET=release

bench: release
	@bench/core/run build/release/vigil

# vigil vs Alertmanager on POST /api/v2/alerts (wrk; bench/intake/run --quick for a short run)
bench-intake: release
	@bench/intake/run build/release/vigil

# vigil.prom vs Python aiohttp against a real Prometheus (bench/sources/run --quick for a short run)
bench-sources: release
	@bench/sources/run build/release/vigil

# the sandboxed process runner vs bare uv_spawn/posix_spawn and Python asyncio
# (bench/exec/run.py --quick for a short run)
bench-exec: release
	@bench/exec/run.py build/release/vigil

# the AIOps pipeline with the bundled policies, beside Keep's published figure
# (bench/pipeline/run --quick for a short run)
bench-pipeline: release
	@bench/pipeline/run build/release/vigil

C_FILES = $(shell git ls-files '*.c' '*.h')

format:
	@clang-format -i $(C_FILES)

format-check:
	@clang-format --dry-run --Werror $(C_FILES)

lint: build
	@luacheck -q lua policies examples tests bench
	@cmake/check-layers.sh
	@clang-tidy -p $(BUILD) --quiet $(shell git ls-files 'src/*.c') 2>/dev/null

clean:
	@rm -rf build
