"""Tests of the image build. tests/image/vm boots the built image under qemu: it needs `make image`
first, so only `make image-test` (a CI stage of its own, after the build) collects it."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("ENCLAVE_IMAGE") else ["vm/*"]
