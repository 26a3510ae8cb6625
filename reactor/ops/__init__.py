"""Running it: the journal and its retention, HTTP (API, metrics, page), systemd notify, loop lag, log format."""
