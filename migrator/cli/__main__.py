"""``python -m migrator.cli``: the ``migrate`` command (what the tests and cron lines spawn)."""

from migrator.cli.app import main

if __name__ == "__main__":
    main(prog_name="migrate")
