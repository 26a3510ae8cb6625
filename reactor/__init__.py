"""reactor: react to QEMU QMP events with declarative YAML rules and pluggable actions."""

__version__ = "0.1.0"
