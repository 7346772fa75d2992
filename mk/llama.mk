# llama.cpp: a real `llama-server`, built from the llama.cpp source that PyPI's llama-cpp-python sdist vendors
# (GitHub is not reachable; PyPI is). CPU only, static, no HTTPS/curl, no web UI, baseline x86-64 ISA so that
# the same binary runs inside a qemu TCG guest. See docs/decisions/0305-llama-cpp-from-the-pypi-sdist.md.
LLAMA_CPP_PYTHON_VERSION := 0.3.36
LLAMA_CPP_SDIST := build/downloads/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION).tar.gz
LLAMA_CPP_SDIST_SHA256 := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# The llama.cpp commit that sdist vendors (its .git/modules/vendor/llama.cpp/HEAD); it carries no build number.
LLAMA_CPP_COMMIT := 0c1e57098bba43ac29e6e3b677cdceebdd22334f
LLAMA_CPP_DIR := build/llama.cpp
LLAMA_CPP_SRC := $(LLAMA_CPP_DIR)/src
LLAMA_CPP_CMAKE := $(LLAMA_CPP_DIR)/cmake-build
LLAMA_SERVER := $(LLAMA_CPP_DIR)/bin/llama-server
LLAMA_JOBS ?= 2

TEST_PREREQS += llama-server

# Every x86 extension past the x86-64 baseline (SSE2) is off: qemu's TCG CPU models need not have them, and
# GGML_NATIVE=OFF alone still turns on SSE4.2/AVX/AVX2/BMI2/FMA/F16C.
# -O1, not Release's -O3: this build serves the tiny fixture (0.4 M parameters: its kernels' speed is noise next
# to the server's own overhead, in TCG too), and compiling it is on the critical path of every clean CI run.
# Measured on the four largest files: -O1 27% less compile time than -O2, which was 12% less than -O3 (0305).
LLAMA_CPP_CMAKE_FLAGS := \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE="-O1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
  -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF -DGGML_FMA=OFF \
  -DGGML_F16C=OFF -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF \
  -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=OFF -DGGML_BLAS=OFF -DGGML_CCACHE=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT=$(shell echo $(LLAMA_CPP_COMMIT) | cut -c1-7)

# What the outputs depend on, each in a file rewritten only when its value changes (so that editing this
# file elsewhere, or a second `make`, rebuilds nothing).
llama-write-if-changed = printf '%s\n' '$(2)' | cmp -s - $(1) || printf '%s\n' '$(2)' > $(1)
$(LLAMA_CPP_DIR)/sdist.pin: FORCE
	@mkdir -p $(@D); $(call llama-write-if-changed,$@,$(LLAMA_CPP_SDIST) $(LLAMA_CPP_SDIST_SHA256))
$(LLAMA_CPP_DIR)/cmake.flags: FORCE
	@mkdir -p $(@D); $(call llama-write-if-changed,$@,$(strip $(LLAMA_CPP_CMAKE_FLAGS)))

.PHONY: FORCE
FORCE:

# The sdist, fetched with pip (the ordinary client) unless it is already there. pip prepares its metadata, which
# installs the build backend: --no-binary names this package only, as `:all:` also built every build dependency
# from source (7.4 minutes against 8 s beside the other set-up jobs; decision 0007). A file whose SHA-256 is not
# the pinned one is moved aside to NAME.rejected (the next `make` fetches it again) and the build stops.
$(LLAMA_CPP_SDIST): $(LLAMA_CPP_DIR)/sdist.pin
	mkdir -p $(@D)
	test -f $@ || $(PY) -m pip download --quiet --no-deps --no-binary llama-cpp-python --dest $(@D) \
	  "llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)"
	@if ! echo "$(LLAMA_CPP_SDIST_SHA256)  $@" | sha256sum --check --status; then \
	  echo "llama-server: SHA-256 MISMATCH for $@: expected $(LLAMA_CPP_SDIST_SHA256)," \
	    "got $$(sha256sum $@ | cut -d' ' -f1) (pinned as LLAMA_CPP_SDIST_SHA256 in mk/llama.mk);" \
	    "moved it to $@.rejected" >&2; \
	  mv -f $@ $@.rejected; \
	  exit 1; \
	fi
	touch $@

# Only vendor/llama.cpp, without its .git link; git must not find the Enclave repository above it either.
$(LLAMA_CPP_SRC)/.stamp: $(LLAMA_CPP_SDIST)
	rm -rf $(LLAMA_CPP_SRC)
	mkdir -p $(LLAMA_CPP_SRC)
	tar -xzf $< -C $(LLAMA_CPP_SRC) --strip-components=3 --exclude='*/vendor/llama.cpp/.git' \
	  llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)/vendor/llama.cpp
	test -f $(LLAMA_CPP_SRC)/tools/server/server.cpp
	touch $@

$(LLAMA_SERVER): $(LLAMA_CPP_SRC)/.stamp $(LLAMA_CPP_DIR)/cmake.flags
	command -v cmake >/dev/null && command -v g++ >/dev/null || bash scripts/system-deps.sh
	GIT_CEILING_DIRECTORIES=$(abspath $(LLAMA_CPP_DIR)) cmake -S $(LLAMA_CPP_SRC) -B $(LLAMA_CPP_CMAKE) \
	  $(LLAMA_CPP_CMAKE_FLAGS) > $(LLAMA_CPP_DIR)/configure.log
	GIT_CEILING_DIRECTORIES=$(abspath $(LLAMA_CPP_DIR)) cmake --build $(LLAMA_CPP_CMAKE) --target llama-server \
	  -j $(LLAMA_JOBS) > $(LLAMA_CPP_DIR)/build.log
	mkdir -p $(@D)
	cp $(LLAMA_CPP_CMAKE)/bin/llama-server $@.tmp
	$@.tmp --version
	mv $@.tmp $@

.PHONY: llama-server
llama-server: $(LLAMA_SERVER) ## Build llama.cpp's llama-server (CPU, static, baseline x86-64) -> build/llama.cpp/bin

# The tiny GGUF fixture model llama-server serves (the GGUF twin of build/fixture-model; fixed seed, byte-identical).
FIXTURE_GGUF_DIR := build/fixture-gguf
FIXTURE_GGUF := $(FIXTURE_GGUF_DIR)/enclave-fixture.gguf
TEST_PREREQS += fixture-gguf

$(FIXTURE_GGUF_DIR)/manifest.json: $(VENV)/.stamp appliance/engines/fixture_gguf.py appliance/engines/fixture_model.py
	$(BIN)/python -m appliance.engines.fixture_gguf --out $(FIXTURE_GGUF_DIR)

.PHONY: fixture-gguf
fixture-gguf: $(FIXTURE_GGUF_DIR)/manifest.json ## Generate the tiny GGUF fixture model -> build/fixture-gguf/enclave-fixture.gguf

.PHONY: llama-serve
llama-serve: venv llama-server fixture-gguf ## Serve the GGUF fixture with llama-server on 127.0.0.1:8101 until ^C
	$(BIN)/enclavectl engine serve-fixture --engine llama-cpp --port 8101
