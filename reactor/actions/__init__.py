"""Actions: the action API (:mod:`.action`), the registry, and every built-in, one module each."""
