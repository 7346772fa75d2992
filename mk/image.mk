# Issue 5: Ansible provisioning, the offline image build and its qemu boot test.
IMAGE_BUILD := build/image
IMAGE := $(IMAGE_BUILD)/out/enclave.raw
TEST_STAGES += image-test
TEST_SETUP += image-base
LINT_STAGES += lint-ansible
BENCH_TARGETS += bench-image

.PHONY: image image-base image-lock image-test lint-ansible bench-image

image-base: venv ## The image's package closure and root file system only (cached; `make test` builds them early)
	$(BIN)/python -m image.build --build-dir $(IMAGE_BUILD) --base-only

image: venv llama-server fixture-gguf ## Build the signed, bootable appliance disk image (incremental; build/image/out/enclave.raw)
	$(BIN)/python -m image.build --build-dir $(IMAGE_BUILD)

image-lock: venv ## Re-pin the image's Python closure (image/requirements.lock) after a dependency change
	$(BIN)/python -c 'from pathlib import Path; from image.wheels import write_lock; write_lock(Path("."), Path("image/requirements.lock"))'

image-test: image ## Boot the image under qemu (TCG unless KVM boots): HTTPS, air gap, model check, clean power-down
	$(TEST_ENV) ENCLAVE_IMAGE=$(IMAGE) $(BIN)/pytest -p no:cacheprovider --timeout=1800 tests/image/vm $(PYTEST_ARGS)

lint-ansible: venv ## ansible-lint (production profile) on provisioning/
	cd provisioning && ../$(BIN)/ansible-lint --profile production site.yml apply-bundle.yml

bench-image: image ## Image build time, size and boot-to-ready time in the VM -> bench-results/image.json
	$(BIN)/python -m image.bench --image $(IMAGE) --out bench-results/image.json
