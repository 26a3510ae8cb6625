"""Pytest fixtures that start real QEMU processes (import them into conftest.py).

``guest_kernel`` (session): the tiny guest, built by examples/guest/build-guest.sh
when missing or stale.  It skips only off Linux; anywhere else a failed build is
a failed test, so CI cannot silently lose the guest tests.

``qemu_vm_factory`` (function): ``await qemu_vm_factory(name="vm1", ...)``
returns a started :class:`~reactor.testing.qemu.QemuVM` whose files live in the
test's ``tmp_path``; every VM it made is killed at teardown.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from reactor.testing.qemu import GuestImage, QemuVM, build_guest

__all__ = ["QemuVMFactory", "guest_kernel", "qemu_vm_factory"]


class QemuVMFactory(Protocol):
    """Start a VM (``start=False`` to only build it); keyword arguments go to QemuVM."""

    async def __call__(self, *, name: str = "vm", start: bool = True, **kwargs: Any) -> QemuVM: ...


@pytest.fixture(scope="session")
def guest_kernel() -> GuestImage:
    """The built tiny guest; builds it (slow the first time: a ~70 MB download)."""
    if sys.platform != "linux":
        pytest.skip("the tiny guest needs Linux (Debian packages, QEMU TCG)")
    return build_guest()


@pytest.fixture
async def qemu_vm_factory(tmp_path: Path) -> AsyncIterator[QemuVMFactory]:
    """Make QEMU VMs in ``tmp_path``; all of them are killed when the test ends."""
    vms: list[QemuVM] = []

    async def make(*, name: str = "vm", start: bool = True, **kwargs: Any) -> QemuVM:
        kwargs.setdefault("workdir", tmp_path)
        vm = QemuVM(name=name, **kwargs)
        vms.append(vm)
        if start:
            await vm.start()
        return vm

    try:
        yield make
    finally:
        for vm in vms:
            await vm.aclose()
