"""The data model: events, their typed catalog (generated classes included) and durations.

Imports nothing above it: rules, the engine, sources and actions all build on it.
"""
