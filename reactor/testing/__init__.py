"""Test helpers that are part of reactor's public API (real QEMU launchers, fakes)."""
