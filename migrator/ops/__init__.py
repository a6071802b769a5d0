"""Running unattended: when a run may go on, how cron starts it, what it tells the user's scripts.

- :mod:`~migrator.ops.window`: ``--window``, ``--max-duration``, ``--until``;
- :mod:`~migrator.ops.cron`: ready-to-paste crontab lines and systemd units;
- :mod:`~migrator.ops.hooks`: the user's commands before cutover, on success, on failure;
- :mod:`~migrator.ops.allocator`: a long run's memory kept from creeping.
"""
