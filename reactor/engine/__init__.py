"""The engine: the bus, rule runs (modes, throttle, threshold), the clock, replay and explain."""
