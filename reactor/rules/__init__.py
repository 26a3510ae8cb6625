"""The rule language: YAML with positions, the loader, the matcher, templates and action arguments."""
