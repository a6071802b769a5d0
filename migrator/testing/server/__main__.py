"""``python -m migrator.testing.server``: the fake vLLM server as a process (``process.main``)."""

import sys

from migrator.testing.server.process import main

if __name__ == "__main__":
    sys.exit(main())
