"""The job table: what a migration has done so far, and who may change it.

- :mod:`~migrator.jobs.models`: the SQLAlchemy models (schema steps in the top-level ``migrations/``);
- :mod:`~migrator.jobs.store`: opening it (SQLite or PostgreSQL), its schema version, its durability;
- :mod:`~migrator.jobs.journal`: every write a run makes, group-committed from one thread;
- :mod:`~migrator.jobs.leases`: databases divided between workers;
- :mod:`~migrator.jobs.lock`: one writer per job table;
- :mod:`~migrator.jobs.claims`: one job table per tree, written at each root.
"""
