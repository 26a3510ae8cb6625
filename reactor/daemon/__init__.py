"""The daemon: its configuration, plugin loading, reloads and the object that owns every task."""
