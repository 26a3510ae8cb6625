"""Shared fixtures: real QEMU (tests/qemu_fixtures.py) and a real mosquitto (tests/broker.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from qemu_fixtures import guest_kernel, qemu_vm_factory  # noqa: F401
