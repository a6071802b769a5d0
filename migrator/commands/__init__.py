"""One module a command: the API a Python caller uses (re-exported by :mod:`migrator.api`)."""
