"""The ``migrate`` command line: it parses, calls :mod:`migrator.api`, and prints.

- :mod:`migrator.cli.app`: the click commands and their options;
- :mod:`migrator.cli.docs`: the README's reference tables, made from those options.

Nothing below this package prints or parses; nothing here does a migration's work.
"""

from migrator.cli.app import main

__all__ = ["main"]
