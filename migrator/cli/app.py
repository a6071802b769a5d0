"""The click commands and their options: each parses, calls :mod:`migrator.api`, prints.

Results go to stdout (``--json``: one JSON document); progress, notes and
errors go to stderr. An expected failure prints one line, ``migrate: error:
...``, and exits with its documented code (see ``migrator.errors``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from migrator import api, errors
from migrator.config import APPLICATIONS, DEFAULT_ENDPOINT, DEFAULT_PATTERN, ENVIRONMENT

log = logging.getLogger("migrator")


# ------------------------------------------------------------- reporters
class BarReporter:
    """tqdm bar on a terminal (stderr)."""

    def __init__(self):
        self.bar = None

    def start(self, total_records: int, done_records: int) -> None:
        from tqdm import tqdm

        if self.bar is not None:
            self.bar.close()
        self.bar = tqdm(
            total=total_records,
            initial=done_records,
            unit="rec",
            desc="embedding",
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def advance(self, records: int) -> None:
        if self.bar is not None:
            self.bar.update(records)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            click.echo(message, err=True)

    def step(self, message: str) -> None:
        """A step of its own after the embedding (the gate, the swap): the bar is done."""
        self.close()
        click.echo(message, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LineReporter:
    """Plain progress lines every ``every`` seconds, for logs and cron."""

    def __init__(self, every: float = 30.0):
        self.every, self.total, self.done, self.last, self.t0, self.start_done = every, 0, 0, 0.0, 0.0, 0

    def start(self, total_records: int, done_records: int) -> None:
        self.total, self.done, self.start_done = total_records, done_records, done_records
        self.t0 = self.last = time.monotonic()
        self._line()

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        log.info(
            "progress: %d/%d records (%.1f%%), %.1f rec/s%s",
            self.done,
            self.total,
            100.0 * self.done / self.total if self.total else 100.0,
            rate,
            f", ETA {eta:.0f}s" if eta is not None else "",
        )

    def advance(self, records: int) -> None:
        self.done += records
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            self._line()

    def note(self, message: str) -> None:
        log.info("%s", message)

    def step(self, message: str) -> None:
        log.info("%s", message)

    def close(self) -> None:
        pass


def _reporter():
    return BarReporter() if sys.stderr.isatty() else LineReporter()


# ------------------------------------------------------------ plumbing
def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s migrate: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("migrator")
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class _StateLog(logging.FileHandler):
    """The state directory's log file, opened at the first line written once the directory
    exists (the command creates it; a refused command must not)."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None and not os.path.isdir(os.path.dirname(self.baseFilename)):
            return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # an unwritable log file never stops (or clutters) a migration


def _log_to_state_dir(state_dir: str | None) -> None:
    """Also append every log line to <state dir>/migrator.log (the writers: run, cutover, rollback)."""
    from migrator.jobs.store import default_state_dir
    from migrator.ops.cron import LOG_NAME

    d = Path(state_dir) if state_dir else default_state_dir()
    handler = _StateLog(d / LOG_NAME, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.getLogger("migrator").addHandler(handler)


def _to_log_file(message: str) -> None:
    """A line for the state directory's log file only (stdout or stderr already shows it)."""
    for h in logging.getLogger("migrator").handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(logging.makeLogRecord({"msg": message, "levelno": logging.INFO, "levelname": "INFO"}))


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except errors.MigratorError as e:
            click.echo(f"migrate: error: {e}", err=True)
            _to_log_file(f"error (exit {e.exit_code}): {e}")
            sys.exit(e.exit_code)

    return wrapper


def _indented_json(obj: Any) -> str:
    """``json.dumps(obj, indent=2, default=str)`` of a document without floats (orjson writes
    some of them otherwise: 1e16, NaN), character for character, at orjson's speed where they
    agree: when orjson's text is printable ASCII (json.dumps escapes everything else, orjson
    only control characters); else json.dumps itself (a name beyond ASCII, a lone surrogate
    from an undecodable file name, an integer beyond 64 bits). Python's encoder cannot indent
    in C: a database each, 100,000 took 7 s of `plan --json`'s 21."""
    import orjson

    try:
        text = orjson.dumps(obj, default=str, option=orjson.OPT_INDENT_2)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(obj, indent=2, default=str)
    if _NOT_PRINTABLE_ASCII.search(text):
        return json.dumps(obj, indent=2, default=str)
    return text.decode("ascii")


_NOT_PRINTABLE_ASCII = re.compile(rb"[^\n -~]")


def _emit(obj: dict, as_json: bool, human) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, default=str))
    else:
        human(obj)


def _confirm(yes: bool, question: str) -> None:
    if yes or not sys.stdin.isatty():
        return
    if not click.confirm(question, default=False, err=True):
        raise errors.MigratorError("cancelled; nothing was changed", exit_code=errors.EXIT_USAGE)


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ------------------------------------------------------------- options
def _no_password_in_argv(ctx, param, value):
    """A password on the command line is seen by every user of the host (ps): refuse it."""
    if value and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE:
        from migrator.jobs.store import has_password

        if has_password(value):
            raise click.BadParameter(
                "holds a password, which every user of this host could read; "
                "leave it out and put it in PGPASSWORD or ~/.pgpass, or give the "
                "whole URL in MIGRATOR_STATE_URL"
            )
    return value


def state_option(f):
    f = click.option(
        "--state-url",
        envvar="MIGRATOR_STATE_URL",
        default=None,
        metavar="URL",
        callback=_no_password_in_argv,
        help="A shared PostgreSQL job table, postgresql+psycopg://USER@HOST/DB, for several "
        "workers [env MIGRATOR_STATE_URL; default: SQLite in the state directory].",
    )(f)
    return click.option(
        "--state-dir",
        envvar="MIGRATOR_STATE_DIR",
        default=None,
        metavar="DIR",
        help="Job database (SQLite), lock and log directory [env MIGRATOR_STATE_DIR; default ./state].",
    )(f)


def _stack(*options):
    """Apply click options so that --help lists them in the order written."""

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


source_options = _stack(
    click.option(
        "--root",
        "roots",
        multiple=True,
        type=click.Path(file_okay=True),
        help="Directory to scan (repeatable), e.g. DVD's video_database/.",
    ),
    click.option(
        "--pattern",
        default=DEFAULT_PATTERN,
        show_default=True,
        help="File names (globs, comma-separated) of the NanoVectorDB files: DVD's database.json, "
        "LightRAG's and nano-graphrag's vdb_*.json.",
    ),
    click.option(
        "--model",
        default=None,
        help="Target model: 8b, 4b, 0.6b, a full model id, or a name the server serves it under "
        "(--served-model-name). A model the server does not serve is refused (exit 6), never "
        "replaced by what it serves.",
    ),
    click.option(
        "--dim",
        type=click.IntRange(32, 65536),
        default=None,
        help="Shorter Matryoshka size, 32 to the model's: cut on the client and re-normalised "
        "(stock Qwen3 servers refuse `dimensions`).",
    ),
    click.option(
        "--profile",
        type=click.Choice(["auto", *APPLICATIONS]),
        default=None,
        help="Whose files these are, so where each record's embedded text is (default: detected "
        "per file from its records, name and neighbours).",
    ),
    click.option(
        "--text-field", default=None, help="Any other NanoVectorDB file: the record field that holds the embedded text."
    ),
    click.option(
        "--text-template",
        default=None,
        metavar="TEMPLATE",
        help="Any other NanoVectorDB file: the embedded text built from record fields, "
        "e.g. '{title}\\n{body}' (the two characters \\n and \\t are a newline and a tab).",
    ),
    click.option(
        "--follow-symlinks",
        is_flag=True,
        help="Migrate the files that symlinked databases point to (default: refuse them).",
    ),
)

endpoint_options = _stack(
    click.option(
        "--endpoint",
        "endpoint",
        envvar="MIGRATOR_ENDPOINT",
        multiple=True,
        metavar="URL",
        help=f"vLLM OpenAI-compatible base URL; repeat it for several servers serving the same "
        f"model [env MIGRATOR_ENDPOINT, space-separated; default {DEFAULT_ENDPOINT}].",
    ),
    click.option(
        "--endpoints-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="A file of endpoint URLs, one per line (# comments), added to --endpoint.",
    ),
    click.option(
        "--api-key-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Read the API key from this file (else MIGRATOR_API_KEY, VLLM_API_KEY, "
        "OPENAI_API_KEY). Never pass a key on the command line.",
    ),
    click.option(
        "--request-timeout",
        type=click.FloatRange(1, 3600),
        default=120.0,
        show_default=True,
        help="Seconds before one request counts as hung.",
    ),
    click.option(
        "--retry-for",
        type=click.FloatRange(0, 86400),
        default=600.0,
        show_default=True,
        help="Seconds of failing requests before the run stops (resumable, exit 5).",
    ),
    click.option("--insecure", is_flag=True, help="Do not verify the https endpoint's TLS certificate (warns; avoid)."),
)


window_options = _stack(
    click.option(
        "--max-duration",
        default=None,
        metavar="DURATION",
        help="Stop in time (45m, 2h, 1h30m): in-flight requests finish, the work is kept, "
        "exit 9; the next run resumes.",
    ),
    click.option(
        "--until",
        default=None,
        metavar="HH:MM",
        help="Stop at the next such local time (e.g. 06:00), as --max-duration does. From "
        "cron use --window: a tick after 06:00 would run until tomorrow's.",
    ),
    click.option(
        "--window",
        default=None,
        metavar="START-END",
        help="Run only inside this local time window (e.g. 22:00-06:00): a run started "
        "outside it exits 9 at once, one inside stops at its end (exit 9).",
    ),
)

hook_options = _stack(
    click.option(
        "--on-before-cutover",
        default=None,
        metavar="CMD",
        help="Shell command run once everything is staged; if it fails nothing is swapped (exit 10).",
    ),
    click.option("--on-success", default=None, metavar="CMD", help="Shell command run when the run succeeds."),
    click.option(
        "--on-failure",
        default=None,
        metavar="CMD",
        help="Shell command run when the run fails. Hooks get MIGRATOR_* figures, never the key.",
    ),
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
yes_option = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")


def migration_option(default_help: str):
    return click.option("--migration", "migration_id", default=None, help=f"Migration id ({default_help}).")


def _settings(**kw) -> api.Settings:
    """The command's options as the API's Settings (an option not given keeps its default)."""
    fields: dict[str, Any] = {  # click's option values, by Settings field name
        k: (list(v) if k == "roots" else v)
        for k, v in kw.items()
        if v is not None and k not in ("endpoint", "endpoints_file")
    }
    urls = list(kw.get("endpoint") or ())
    if kw.get("endpoints_file"):
        from migrator.vllm.pool import endpoints_from_file

        urls += endpoints_from_file(kw["endpoints_file"])
    if urls:
        fields["endpoint"] = urls[0] if len(urls) == 1 else urls
    return api.Settings(**fields)


# ------------------------------------------------------------ commands
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="migrator")
def main(verbose: bool) -> None:
    """Move NanoVectorDB databases (DeepVideoDiscovery's video_database/) to a new
    embedding model served by vLLM: resumable, atomic, with backups."""
    _setup_logging(verbose)


@main.command()
@source_options
@endpoint_options
@click.option("--no-probe", is_flag=True, help="Do not contact the endpoint.")
@click.option("--no-tokenize", is_flag=True, help="Estimate tokens instead of asking /tokenize.")
@json_option
@_handle_errors
def plan(as_json, no_probe, no_tokenize, **kw):
    """Show what a run would do. Writes nothing."""
    import tempfile

    import orjson

    # each database is spooled to a temporary file as plan settles it, and printed from there:
    # memory holds one database at a time, not 100,000. With --json it is spooled as printed:
    # rendering it then costs nothing (this process mostly waits on the scan's pool), where
    # rendering 100,000 after the scan added a quarter to plan's time
    with tempfile.TemporaryFile() as spool:
        spooled = 0

        def keep(db: dict) -> None:
            nonlocal spooled
            if as_json:  # escaped as json.dumps escapes: all but printable ASCII
                text = _indented_json(db).replace("\n", "\n    ")
                spool.write(("\n    " if not spooled else ",\n    ").encode() + text.encode("ascii"))
            elif db["status"] != "migrate" or db["reason"]:  # the only ones the text names
                spool.write(orjson.dumps(db, default=str) + b"\n")
            spooled += 1

        report = api.plan(_settings(**kw), probe=not no_probe, tokenize=not no_tokenize, databases=keep)
        _plan_print(report, spool, as_json, spooled)
    code = report["endpoint"].get("exit_code")
    if code:
        click.echo(f"migrate: error: {report['endpoint']['error']}; nothing was written", err=True)
        sys.exit(code)


def _spooled(spool):
    """The databases plan spooled, one JSON line each, read back one at a time."""
    import orjson

    spool.flush()
    spool.seek(0)
    for line in spool:
        yield orjson.loads(line)


def _plan_print(r: dict, spool, as_json: bool, n_databases: int) -> None:
    """``plan``'s output: the report, then its databases, read from ``spool``.
    --json: the one document ``json.dumps(..., indent=2)`` would print with "databases" last
    (the spool holds the databases' part of it as printed)."""
    if as_json:
        head = json.dumps(r, indent=2, default=str)
        click.echo(head[: -len("\n}")] + ',\n  "databases": [', nl=False)
        spool.flush()
        spool.seek(0)
        while chunk := spool.read(1 << 20):
            click.echo(chunk.decode("ascii"), nl=False)
        click.echo("\n  ]\n}" if n_databases else "]\n}")
        return

    t = r["totals"]
    click.echo(f"Databases under {', '.join(r['roots'])} named {r['pattern']!r}: {t['databases']}")
    for dim, n in t["by_dim"].items():
        click.echo(f"  {n:>6} at {dim} dims")
    for app, n in sorted(t["by_application"].items()):
        click.echo(f"  {n:>6} {app}")
    if t["same_dim_other_model"]:
        click.echo(
            f"WARNING: {t['same_dim_other_model']} database(s) at {r['target_dim']} dims hold another "
            f"model's vectors (same size, different space); they are migrated too"
        )
    if t["model_unknown_at_target_dim"]:
        click.echo(
            f"WARNING: {t['model_unknown_at_target_dim']} database(s) at {r['target_dim']} dims record "
            f"no model; with the endpoint reachable, plan probes them (see SKIP lines)"
        )
    click.echo(
        f"To migrate to {r['model']} ({r['target_dim']} dims): {t['to_migrate']} databases, "
        f"{t['records']} records, {t['chars']} characters, "
        f"{'' if t['tokens_exact'] else '~'}{t['tokens']} tokens "
        f"({'exact, from /tokenize' if t['tokens_exact'] else 'estimated'})"
    )
    for d in r["disk"]:
        click.echo(
            f"Disk ({d['filesystem_of']}): needs {_human_bytes(d['needed_bytes'])} for staged "
            f"files, {_human_bytes(d['free_bytes'])} free{'' if d['enough'] else '  NOT ENOUGH'}"
        )
    click.echo(f"Backups: {_human_bytes(t['backup_bytes'])} of old files kept as hard links (no copy)")
    for db in _spooled(spool):  # only those not simply to migrate were spooled
        click.echo(f"  {db['status'].upper():7} {db['path']}: {db['reason']}")
    _print_configs(r["configs"], "plan")
    e = r["endpoint"]
    if e.get("reachable"):
        click.echo(
            f"Endpoint {e['url']}: model {e['model']}, max_model_len {e['max_model_len']}, "
            f"vectors of {e['native_dim']} dims"
        )
        if e.get("measured_tokens_per_second"):
            eta = e.get("eta_seconds")
            click.echo(
                f"  measured {e['measured_tokens_per_second']:.0f} tokens/s -> ETA {eta:.0f} s"
                if eta is not None
                else ""
            )
    else:
        click.echo(f"Endpoint {e['url']}: not probed" + (f" ({e['error']})" if e.get("error") else ""))


def _print_run(r: dict) -> None:
    click.echo(r["message"])
    if r.get("records_embedded"):
        click.echo(f"  {r['records_embedded']} records, {r['tokens_embedded']} tokens embedded in total")
    for f in r.get("failures") or []:
        click.echo(f"  FAILED {f}")
    for t in r.get("truncated") or []:
        click.echo(f"  TRUNCATED {t}")
    cut = r.get("cutover") or {}
    for p in cut.get("restage") or []:
        click.echo(f"  CHANGED {p} (not overwritten; re-embed with `migrate run`)")
    applied = r.get("applied") or []
    for line in applied:
        click.echo(f"  settings changed (--apply-config; the original kept as a .backup): {line}")
    _print_configs(
        [c for c in r.get("configs") or [] if not any(line.startswith(f"{c['path']}:") for line in applied)], "cutover"
    )


def _print_configs(configs: list[dict], when: str) -> None:
    """Cutover: the lines each application must change now. Plan: a config still naming another model."""
    from migrator import apps  # here, not at start-up: status and the others need none of it

    for c in configs:
        name, where = apps.title_of(c["application"]), c["path"]
        if when == "plan":
            if where and c["stale"]:
                click.echo(
                    f"WARNING: {where} still names {c['model'] or '?'} ({c['dim'] or '?'} dims); "
                    f"at cutover {name} must be set to: {'; '.join(c['lines'])}"
                )
        else:
            click.echo(f"Now change {name}'s settings" + (f" in {where}:" if where else ":"))
            for line in c["lines"]:
                click.echo(f"    {line}")
        for warning in c["warnings"]:
            click.echo(f"WARNING: {warning}")
        if when != "plan":
            for note in c["notes"]:
                click.echo(f"  ({note})")


def _finish_run(result: api.RunResult, as_json: bool) -> None:
    _to_log_file(f"{result.outcome}: {result.message}")
    _emit(result.as_dict(), as_json, _print_run)
    if result.outcome == "partial":
        sys.exit(errors.EXIT_PARTIAL)
    if result.outcome == "held":
        sys.exit(errors.EXIT_HELD)
    if result.outcome == "gate_failed":
        sys.exit(errors.EXIT_GATE)


@main.command()
@source_options
@endpoint_options
@state_option
@click.option("--batch-size", type=click.IntRange(1, 2048), default=128, show_default=True, help="Texts per request.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    default=None,
    help="Requests in flight (default: found by measuring throughput while running).",
)
@click.option("--no-cutover", is_flag=True, help="Stop after staging; `migrate cutover` swaps later.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first database that cannot be migrated.")
@window_options
@hook_options
@click.option(
    "--serve",
    is_flag=True,
    help="Start `vllm serve MODEL --runner pooling --max-model-len 8192` for this run and stop "
    "it afterwards (also on failure or Ctrl-C). Output in <state dir>/vllm.log.",
)
@click.option("--serve-gpu", default=None, metavar="INDEX", help="With --serve: CUDA_VISIBLE_DEVICES.")
@click.option(
    "--serve-memory-fraction",
    type=click.FloatRange(0.05, 1.0),
    default=None,
    help="With --serve: --gpu-memory-utilization.",
)
@click.option(
    "--serve-arg",
    "serve_args",
    multiple=True,
    metavar="FLAG",
    help="With --serve: one more `vllm serve` argument (repeatable), e.g. --serve-arg=--dtype=half.",
)
@click.option(
    "--serve-timeout",
    type=click.FloatRange(1, 86400),
    default=None,
    help="With --serve: seconds to wait for the model to load (default 1800).",
)
@click.option(
    "--backoff-queue",
    type=click.IntRange(0, 100000),
    default=None,
    metavar="N",
    help="Send fewer requests while vLLM's /metrics shows more than N requests waiting "
    "(vllm:num_requests_waiting), so a shared GPU stays usable for other work.",
)
@click.option(
    "--metrics-url",
    default=None,
    metavar="URL",
    help="With --backoff-queue: whose /metrics to watch (default: the first endpoint's), e.g. "
    "the chat model's vLLM on the same GPU.",
)
@click.option(
    "--apply-config",
    is_flag=True,
    help="Right after the swap, set the applications' settings themselves: DVD's config.py "
    "(model, dim, endpoint, key variable) and LightRAG's .env, each written atomically "
    "with its original kept as <file>.migrator-<id>.backup; rollback puts it back. "
    "An application with a file not cut over keeps its settings.",
)
@click.option(
    "--no-quality-gate",
    is_flag=True,
    help="Cut over without the semantic quality gate. Only for servers known to answer "
    "non-semantic vectors (throughput benchmarks); never for a real migration.",
)
@yes_option
@json_option
@_handle_errors
def run(as_json, yes, no_cutover, no_quality_gate, apply_config, **kw):
    """Embed, stage, verify and cut over; resumes an unfinished migration."""
    confirm = None
    if not yes and sys.stdin.isatty():
        # asked once the scan says how many databases and records, to which model and size
        confirm = lambda question: click.confirm(question, default=False, err=True)  # noqa: E731
    settings = _settings(
        **kw, apply_config=apply_config, quality_gate=not no_quality_gate, cutover=not no_cutover, confirm=confirm
    )
    _log_to_state_dir(settings.state_dir)
    reporter = _reporter()
    try:
        result = api.run(settings, reporter=reporter)
    finally:
        reporter.close()
    _finish_run(result, as_json)


@main.command()
@state_option
@migration_option("default: the unfinished one")
@click.option(
    "--on-before-cutover",
    default=None,
    metavar="CMD",
    help="Shell command run first; if it fails nothing is swapped (exit 10).",
)
@click.option("--apply-config", is_flag=True, help="As for `run`.")
@yes_option
@json_option
@_handle_errors
def cutover(as_json, yes, migration_id, apply_config, **kw):
    """Swap staged databases in (the old ones are kept as backups)."""
    _confirm(yes, "Swap the staged databases in (the old ones are kept as backups)?")
    _log_to_state_dir(kw["state_dir"])
    settings = _settings(**kw, apply_config=apply_config)
    _finish_run(api.cutover(settings, migration_id=migration_id), as_json)


@main.command()
@state_option
@migration_option("default: the latest")
@click.option("--force", is_flag=True, help="Restore even files changed since cutover (they are kept aside).")
@yes_option
@json_option
@_handle_errors
def rollback(as_json, yes, force, migration_id, **kw):
    """Put the backups back: every file byte-identical to before the migration."""
    _confirm(yes, "Restore the databases from their backups?")
    _log_to_state_dir(kw["state_dir"])
    result = api.rollback(_settings(**kw), migration_id=migration_id, force=force)

    def human(r):
        if r["was_rolled_back"]:
            click.echo(f"migration {r['migration']} was already rolled back; nothing to restore")
        else:
            click.echo(
                f"rollback of migration {r['migration']}: {r['done']} restored, "
                f"{r['already']} already as before, {len(r['refused'])} refused"
            )
        for line in r["refused"]:
            click.echo(f"  REFUSED {line}")
        for path in r.get("configs_restored") or []:
            click.echo(f"  settings restored: {path} (as before --apply-config)")

    _to_log_file(
        f"rollback of migration {result.migration_id}: {result.done} restored, "
        f"{result.already} already as before, {len(result.refused)} refused"
    )
    _emit(result.as_dict(), as_json, human)
    if result.refused:
        sys.exit(errors.EXIT_PARTIAL)


@main.command()
@state_option
@migration_option("default: all")
@click.option("--databases", "show_dbs", is_flag=True, help="List every database (also in --json: `database_list`).")
@json_option
@_handle_errors
def status(as_json, show_dbs, migration_id, state_dir, state_url):
    """Migrations, their progress, throughput and errors. Writes nothing."""
    report = api.status(state_dir, migration_id=migration_id, url=state_url, databases=show_dbs)

    def human(r):
        if not r["migrations"]:
            click.echo(f"no migrations recorded in {r['state']}")
            return
        for m in r["migrations"]:
            states = ", ".join(f"{v} {k}" for k, v in sorted(m["by_state"].items()))
            shown = "interrupted" if (m.get("message") or "").startswith("interrupted") else m["state"]
            click.echo(
                f"{m['id']}  {shown:<11} {m['requested_model']} -> {m['model']} "
                f"({m['target_dim']} dims)  {m['databases']} databases: {states}"
            )
            if m.get("message"):
                click.echo(f"    {m['message']}")
            rate = f", {m['records_per_second']} rec/s" if m["records_per_second"] else ""
            click.echo(
                f"    records {m['records_done']}/{m['records_total']} done, "
                f"{m['records_left']} left{rate}; backups hold {_human_bytes(m['backup_bytes'])}"
            )
            by_app = ", ".join(f"{n} {a}" for a, n in sorted(m["by_application"].items()))
            click.echo(f"    files: {by_app}; texts read as {m['texts']}")
            for worker, n in sorted(m.get("workers", {}).items()):
                click.echo(f"    worker {worker} holds {n} database(s)")
            if show_dbs:
                for d in m["database_list"]:
                    click.echo(
                        f"    {d['state']:<11} {d['done']}/{d['records']}  {d['profile'] or '-':<13} {d['path']}"
                    )
            for e in m["errors"]:
                click.echo(f"    error {e['at']}: {e['message']}")

    _emit(report, as_json, human)


@main.command()
@endpoint_options
@state_option
@migration_option("default: the unfinished one, else the latest finished one")
@json_option
@_handle_errors
def verify(as_json, migration_id, **kw):
    """The quality gate on a migration's staged databases (it also runs before every cutover), or,
    once it is done, on the live files it wrote against their backups. Writes nothing."""
    report = api.verify(_settings(**kw), migration_id=migration_id)

    def human(r):
        click.echo(
            f"migration {r['migration']}: quality gate {'PASSED' if r['passed'] else 'FAILED'}: "
            f"{r['databases']} {r['what']} database(s); {r['self_hits']}/{r['sampled_records']} sampled "
            f"records found by their own text"
            + (
                f"; neighbourhood overlap {r['neighbourhood_overlap']} (chance {r['overlap_by_chance']})"
                if r["neighbourhood_overlap"] is not None
                else ""
            )
        )
        for line in r["problems"]:
            click.echo(f"  FAILED {line}")

    _emit(report, as_json, human)
    if not report["passed"]:
        sys.exit(errors.EXIT_GATE)


@main.command()
@state_option
@migration_option("default: the latest finished one")
@yes_option
@json_option
@_handle_errors
def finalize(as_json, yes, migration_id, **kw):
    """Delete a finished migration's backups, after saying how much space that frees.
    Rollback is impossible after it."""
    _log_to_state_dir(kw["state_dir"])

    def confirm(found) -> bool:
        question = (
            f"Delete {len(found.files)} backup/leftover file(s) of migration {found.migration_id}, "
            f"freeing {_human_bytes(found.bytes_freed)}? It can never be rolled back after this."
        )
        if yes:
            return True
        if not sys.stdin.isatty():
            raise errors.UsageError(f"{question} Not asked without a terminal: add --yes to confirm")
        return click.confirm(question, default=False, err=True)

    result = api.finalize(_settings(**kw), migration_id=migration_id, confirm=confirm)
    _to_log_file(result["message"])
    _emit(result, as_json, lambda r: click.echo(f"{r['message']}; {_human_bytes(r['bytes_freed'])} freed"))


@main.command("cron")
@click.option("--every", required=True, metavar="DURATION", help="How often to run: 15m, 1h, 1d.")
@click.option("--systemd", is_flag=True, help="Print a systemd service and timer instead of a crontab line.")
@source_options
@endpoint_options
@state_option
@click.option("--batch-size", type=click.IntRange(1, 2048), default=None, help="As for `run`.")
@click.option("--concurrency", type=click.IntRange(1, 512), default=None, help="As for `run`.")
@click.option("--no-cutover", is_flag=True, help="As for `run`.")
@click.option("--backoff-queue", type=click.IntRange(0, 100000), default=None, metavar="N", help="As for `run`.")
@click.option("--metrics-url", default=None, metavar="URL", help="As for `run`.")
@window_options
@hook_options
@click.pass_context
@_handle_errors
def cron_cmd(ctx, every, systemd, **kw):
    """Print a ready crontab line (or systemd units) that runs and resumes the migration."""
    text = api.schedule(
        _run_flags(ctx, kw),
        every=every,
        roots=list(kw["roots"]),
        endpoints=list(kw["endpoint"]),
        state_dir=kw["state_dir"],
        state_url=kw.get("state_url"),
        api_key_file=kw.get("api_key_file"),
        window_spec=kw.get("window"),
        until=kw.get("until"),
        max_duration=kw.get("max_duration"),
        systemd=systemd,
    )
    click.echo(text, nl=False)


def _run_flags(ctx: click.Context, kw: dict) -> list[str]:
    """The `migrate run` flags that give the options cron was given (the defaults left out)."""
    args: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name in ("every", "systemd", "state_dir", "state_url") or not isinstance(param, click.Option):
            continue
        value = kw.get(name)
        if (
            value in (None, False, ())
            or (name == "endpoint" and tuple(value) == (DEFAULT_ENDPOINT,))
            or value == param.default
        ):
            continue
        flag = param.opts[-1] if param.opts[-1].startswith("--") else param.opts[0]
        if param.is_flag:
            args.append(flag)
            continue
        for v in value if param.multiple else [value]:
            if name in ("roots", "api_key_file", "endpoints_file"):
                v = os.path.abspath(v)  # absolute, as cron needs; a symlink stays as typed
            args += [flag, str(v)]
    return args


@main.command("env")
def env_cmd():
    """List the environment variables migrate reads (values are not shown)."""
    width = max(map(len, ENVIRONMENT))
    for name, what in ENVIRONMENT.items():
        click.echo(f"{name:<{width}}  {what}")


if __name__ == "__main__":
    main()
