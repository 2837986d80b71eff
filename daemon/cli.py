"""The `neurolabel` command: parses arguments and calls the module that does the work.

Exit codes: 0 success, 1 the work failed, 2 bad usage or bad configuration.
Each handler imports its module lazily, so `neurolabel --help` stays fast and
the daemon never imports training code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from daemon.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from daemon.store.database import Database

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A user's mistake (bad argument, unreadable input file); printed without a traceback, exit code 2."""


class CommandFailed(Exception):
    """The work could not be done (e.g. Triton unreachable); printed without a traceback, exit code 1."""


Handler = Callable[[argparse.Namespace], int]


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _database(config: Config) -> Database:
    """The configured database, migrated to the current schema when [database] auto_migrate is on."""
    from daemon.store.database import open_database
    from daemon.store.migrate import upgrade_to_head

    database = open_database(config.database.url)
    if config.database.auto_migrate:
        upgrade_to_head(database)
    return database


# --- handlers -------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from daemon.app import run_until_signalled
    from daemon.ops.logs import configure_logging

    config = _config(args)
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    run_until_signalled(config)
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from daemon.ops.status import fetch_status, render_status

    config = _config(args)
    status = fetch_status(config)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        render_status(status)
    return EXIT_OK if status.get("ready") else EXIT_FAILURE


def _triton(args: argparse.Namespace) -> int:
    from daemon.inference.triton_server import TritonNotInstalled, TritonStartFailed, run_bundled_server
    from daemon.ops.logs import configure_logging

    config = _config(args)
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    try:
        run_bundled_server(config)
    except TritonNotInstalled as exc:
        raise UsageError(str(exc)) from None
    except TritonStartFailed as exc:
        raise CommandFailed(str(exc)) from None
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from daemon.audit.scheduled import write_audit_report

    config = _config(args)
    since, until = _parse_time(args.since, "--since"), _parse_time(args.until, "--until")
    if since and until and until <= since:
        raise UsageError("--until must be after --since")
    written = write_audit_report(config, _database(config), since, until)
    print(written[0])
    return EXIT_OK


def _parse_time(text: str | None, option: str) -> datetime | None:
    from datetime import timezone

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _db_upgrade(args: argparse.Namespace) -> int:
    from daemon.store.database import open_database
    from daemon.store.migrate import current_revision, upgrade_to_head

    config = _config(args)
    database = open_database(config.database.url)
    upgrade_to_head(database)
    print(f"database at revision {current_revision(database)}")
    return EXIT_OK


def _db_downgrade(args: argparse.Namespace) -> int:
    from alembic.util.exc import CommandError

    from daemon.store.database import open_database
    from daemon.store.migrate import current_revision, downgrade_to

    config = _config(args)
    database = open_database(config.database.url)
    try:
        downgrade_to(database, args.revision)
    except CommandError as exc:
        raise UsageError(str(exc)) from None
    print(f"database at revision {current_revision(database) or 'base (empty)'}")
    return EXIT_OK


def _db_history(args: argparse.Namespace) -> int:
    from daemon.store.database import open_database
    from daemon.store.migrate import current_revision, revisions

    config = _config(args)
    current = current_revision(open_database(config.database.url))
    for revision, message in revisions():
        print(f"{revision}  {message}{'  (current)' if revision == current else ''}")
    return EXIT_OK


def _db_copy(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from daemon.config import DatabaseConfig
    from daemon.store.copy import CopyRefused, copy_database
    from daemon.store.database import open_database

    config = _config(args)
    DatabaseConfig(url=args.to).validate()
    source, target = open_database(config.database.url), open_database(args.to)
    try:
        summary = copy_database(source, target, progress=lambda table, rows: print(f"{table}: {rows} rows"))
    except CopyRefused as exc:
        raise UsageError(str(exc)) from None
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise CommandFailed(f"copy failed, the target is unchanged: {type(exc).__name__}: {reason}") from None
    finally:
        source.dispose()
        target.dispose()
    print(f"copied {summary.total} rows in {summary.seconds:.1f} s; now set [database] url to the new database")
    return EXIT_OK


def _jobs(args: argparse.Namespace) -> int:
    from daemon.store.queue import depths, retry_failed

    config = _config(args)
    database = _database(config)
    if args.jobs_command == "retry":
        count = retry_failed(database, args.ids or None)
        print(f"{count} failed job(s) made pending again")
    else:
        print(json.dumps(depths(database), indent=2))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.work.export import ExportUnavailable, export

    database = _database(_config(args))
    try:
        count = export(database, args.format, Path(args.output) if args.output else None, all_history=args.all_history)
    except ExportUnavailable as exc:
        raise UsageError(str(exc)) from None
    finally:
        database.dispose()
    if args.output:
        print(f"{count} labelled stud{'y' if count == 1 else 'ies'} written to {args.output}", file=sys.stderr)
    return EXIT_OK


def _relabel(args: argparse.Namespace) -> int:
    import asyncio
    import datetime as dt

    from daemon.work.relabel import Selection, run_relabel

    try:
        since = dt.datetime.fromisoformat(args.since) if args.since else None
    except ValueError:
        raise UsageError(f"--since: {args.since!r} is not a date (YYYY-MM-DD) or ISO date-time") from None
    if since is not None and since.tzinfo is None:
        since = since.astimezone()  # the local time of this machine
    selection = Selection(since=since, accessions=tuple(args.accession or ()))
    config = _config(args)
    database = _database(config)
    try:
        summary = asyncio.run(run_relabel(config, database, selection, model=args.model))
    except ConnectionError as exc:
        raise CommandFailed(str(exc)) from None
    finally:
        database.dispose()
    print(
        f"{summary.selected} report(s) selected, {summary.classified} classified with {summary.model}, "
        f"{summary.unchanged} already labelled by it, {summary.labels_written} study label row(s) written "
        "(their write-back is queued for the running daemon)"
    )
    return EXIT_OK


def _corpus(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.training.generator import DEFAULT_CORPUS_SIZE, DEFAULT_SEED, write_corpus

    n = DEFAULT_CORPUS_SIZE if args.n is None else args.n
    seed = DEFAULT_SEED if args.seed is None else args.seed
    if n < 1:
        raise UsageError("-n must be at least 1")
    try:
        count = write_corpus(Path(args.output), n, seed)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    print(f"{count} synthetic reports (seed {seed}) written to {args.output}")
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    import logging
    import shlex

    from daemon.training.options import from_arguments

    options = from_arguments(args)
    if options.data is not None and not options.data.is_file():
        raise UsageError(f"training data not found: {options.data}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("neurolabel").setLevel(logging.INFO)
    from daemon.training.train import TrainingDataError, run_training

    try:
        result = run_training(options, command=shlex.join(["neurolabel", *sys.argv[1:]]))
    except TrainingDataError as exc:
        raise UsageError(str(exc)) from None
    print(f"model written to {result.version_dir} ({result.seconds / 60:.1f} min); thresholds {result.thresholds}")
    return EXIT_OK


def _prune_heads(args: argparse.Namespace) -> int:
    import logging
    import shlex
    from pathlib import Path

    source = Path(args.source)
    if not (source / "metadata.json").is_file():
        raise UsageError(f"not a model version folder (no metadata.json): {source}")
    if min(args.scoring_reports, args.validation_reports) < 1:
        raise UsageError("--scoring-reports and --validation-reports must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("neurolabel").setLevel(logging.INFO)
    from daemon.training.prune import PruneOptions, PruningError, run_pruning

    options = PruneOptions(
        source=source, version=args.version, heads=args.heads, scoring_reports=args.scoring_reports,
        scoring_seed=args.scoring_seed, validation_reports=args.validation_reports,
        validation_seed=args.validation_seed, release=args.release,
    )
    try:
        result = run_pruning(options, command=shlex.join(["neurolabel", *sys.argv[1:]]))
    except PruningError as exc:
        raise UsageError(str(exc)) from None
    print(f"pruned model written to {result.version_dir} ({result.seconds / 60:.1f} min); heads removed "
          f"{result.removal}; thresholds {result.thresholds}")
    return EXIT_OK


def _classify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.inference.classify_file import ClassifyInputError, run_classify
    from daemon.inference.prediction import InferenceFailed, InferenceUnavailable
    from daemon.inference.triton_server import TritonNotInstalled, TritonStartFailed

    config = _config(args)
    try:
        count, seconds = run_classify(config, Path(args.input), Path(args.output), local=args.local)
    except ClassifyInputError as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, OSError) as exc:  # the model files cannot be read
        raise UsageError(f"cannot load the model {config.triton.model!r} from {config.triton.model_repository}: {exc}") from None
    except (InferenceUnavailable, InferenceFailed, TritonNotInstalled, TritonStartFailed) as exc:
        raise CommandFailed(str(exc)) from None
    print(f"{count} reports classified in {seconds:.1f} s ({count / max(seconds, 1e-9):.1f} reports/s) -> {args.output}", file=sys.stderr)
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.evaluation import evaluate as ev

    if args.baseline and args.predictions:
        raise UsageError("--baseline and --predictions are alternatives; give one")
    if args.bootstrap < 1:
        raise UsageError("--bootstrap must be at least 1")
    try:
        records = ev.read_reports(Path(args.input))
        if args.baseline:
            scores = ev.baseline_scores(records)
        elif args.predictions:
            scores = ev.prediction_file_scores(records, Path(args.predictions))
        else:
            config = _config(args)
            try:
                scores = ev.model_scores(records, config.triton.model_repository, config.triton.model)
            except (OSError, ValueError) as exc:
                raise UsageError(
                    f"cannot load the model {config.triton.model!r} from {config.triton.model_repository}: {exc} "
                    "(train and export one, or use --baseline or --predictions FILE)"
                ) from exc
        result = ev.evaluate(records, scores, args.reference, n_boot=args.bootstrap, seed=args.seed)
    except ev.InputError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print(ev.result_json(result))
    else:
        ev.render_table(result)
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.dicom.inspect import NoLabels, NotReadable, inspect_file

    try:
        output = inspect_file(Path(args.file))
    except NotReadable as exc:
        raise UsageError(str(exc)) from None
    except NoLabels as exc:
        raise CommandFailed(str(exc)) from None
    print(json.dumps(output))
    return EXIT_OK


def _hl7(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from daemon.hl7.review import intake_for, list_rejected, reprocess

    config = _config(args)
    database = _database(config)
    if args.hl7_command == "rejected":
        rows = list_rejected(database, include_reprocessed=args.all, limit=args.limit)
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            print(
                f"{row['id']:>8}  {row['received_at']}  {row['peer']}  {row['sending_application']}^"
                f"{row['sending_facility']}  MSH-10={row['control_id']}  {row['ack_code']}  {row['error']}"
            )
        return EXIT_OK
    if not args.ids and not args.all:
        raise UsageError("name the message ids to reprocess, or --all")
    results = reprocess(intake_for(config, database), database, None if args.all else args.ids)
    for result in results:
        print(json.dumps(asdict(result)) if args.json else f"{result.message_id:>8}  {result.status:<9}  {result.detail}")
    return EXIT_OK if all(r.status in ("accepted", "duplicate") for r in results) else EXIT_FAILURE


def _backfill(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.backfill.display import progress_bar
    from daemon.backfill.run import BackfillStopped, check_backfill_file, run_backfill
    from daemon.backfill.sources import BackfillInputError
    from daemon.inference.prediction import InferenceFailed, InferenceUnavailable
    from daemon.inference.triton_server import TritonNotInstalled, TritonStartFailed

    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    config = _config(args)
    try:
        checked = check_backfill_file(config, Path(args.file), args.format)
    except BackfillInputError as exc:
        raise UsageError(str(exc)) from None
    database = _database(config)
    try:
        with progress_bar() as progress:
            counts = run_backfill(config, database, checked, batch_size=args.batch, progress=progress)
    except BackfillStopped as exc:
        print("\n".join(exc.counts.lines()), file=sys.stderr)
        print(f"neurolabel: backfill stopped ({exc}); run the same command again to resume", file=sys.stderr)
        return 130 if str(exc) == "interrupted" else EXIT_FAILURE
    except TritonNotInstalled as exc:
        raise UsageError(str(exc)) from None
    except (InferenceUnavailable, InferenceFailed, TritonStartFailed) as exc:
        raise CommandFailed(str(exc)) from None
    finally:
        database.dispose()
    print("\n".join(counts.lines()))
    return EXIT_OK


# --- parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="configuration file (default: $NEUROLABEL_CONFIG, else ./config.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="neurolabel",
        description="Labels head MRI studies from their radiology reports (HL7 + DICOM + Triton).",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(handler=handler)
        return sub

    command("run", _run, "run the daemon with everything the configuration enables")

    status = command("status", _status, "show which components of the running daemon are up")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    report = command("report", _report, "write the audit report (HTML with charts, and CSV) now")
    report.add_argument("--since", help="start of the period, UTC (default: 24 hours before --until)")
    report.add_argument("--until", help="end of the period, UTC (default: now)")

    command("triton", _triton, "run the bundled Triton server alone (for a dedicated inference host)")

    db = command("db", _db_upgrade, "database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply database migrations", parents=[common])
    downgrade = db_commands.add_parser(
        "downgrade",
        help="undo migrations down to REVISION, for a rollback (back up the database first)",
        parents=[common],
    )
    downgrade.add_argument("revision", help="the revision the older version needs (see `neurolabel db history`)")
    downgrade.set_defaults(handler=_db_downgrade)
    history = db_commands.add_parser("history", help="list the migrations, newest first", parents=[common])
    history.set_defaults(handler=_db_history)
    copy = db_commands.add_parser(
        "copy",
        help="copy every row into another, empty database (SQLite to PostgreSQL, or back)",
        parents=[common],
    )
    copy.add_argument(
        "--to", required=True, metavar="URL", help="target URL, e.g. postgresql+psycopg://neurolabel@db/neurolabel"
    )
    copy.set_defaults(handler=_db_copy)

    jobs = command("jobs", _jobs, "inspect the work queue or re-run failed jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jobs_commands.add_parser("list", help="job counts per kind and state", parents=[common])
    retry = jobs_commands.add_parser("retry", help="make failed jobs pending again", parents=[common])
    retry.add_argument("ids", nargs="*", type=int, help="job ids (default: every failed job)")

    export = command("export", _export, "the labelled studies (current labels) as a table for building image datasets")
    export.add_argument("--format", choices=("csv", "jsonl", "parquet"), required=True, help="output format")
    export.add_argument("-o", "--output", metavar="FILE", help="output file (default: standard output)")
    export.add_argument("--all-history", action="store_true",
                        help="every labels row, superseded and withdrawn ones too, with why and when")

    relabel = command("relabel", _relabel, "classify a selection of reports again through Triton (e.g. a newer model); "
                      "new labels rows, the old ones kept as 'relabelled'")
    relabel.add_argument("--model", help="Triton model name (default: [triton] model)")
    relabel.add_argument("--since", metavar="DATE", help="only reports received on or after DATE (YYYY-MM-DD)")
    relabel.add_argument("--accession", nargs="+", metavar="ACCESSION", help="only these accession numbers")

    corpus = command("corpus", _corpus, "write a synthetic, labelled training corpus of head MRI reports (JSONL)")
    corpus.add_argument("-n", type=int, help="number of reports (default: the generator's, as in data/corpus/)")
    corpus.add_argument("--seed", type=int, help="random seed (default: the generator's, as in data/corpus/)")
    corpus.add_argument("-o", "--output", required=True, metavar="FILE.jsonl", help="output file")

    evaluate = command("evaluate", _evaluate, "per-label AUC-ROC (95%% bootstrap interval), accuracy, "
                       "sensitivity, specificity and F1 of the model (or the rule-based baseline) on labelled reports")
    evaluate.add_argument("input", metavar="IN.jsonl", help="reports with 'labels' and/or 'image_labels'")
    evaluate.add_argument("--reference", choices=("report", "image"), default="report",
                          help="compare with report labels (default) or image labels")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.add_argument("--baseline", action="store_true", help="score with the rule-based baseline labeller")
    evaluate.add_argument("--predictions", metavar="PRED.jsonl",
                          help="score with a `neurolabel classify` output file, joined by id")
    evaluate.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")

    train = command("train", _train, "train the report classifier and export it into the Triton model repository "
                    "(needs the 'train' extra: torch, transformers, onnx)")
    from daemon.training.options import add_arguments as add_train_arguments

    add_train_arguments(train)

    prune = command("prune-heads", _prune_heads, "remove the attention heads that matter least from an exported "
                    "model and write it as a new version with new thresholds (needs the 'train' extra: onnx)")
    prune.add_argument("source", metavar="VERSION_DIR", help="version folder to prune, e.g. triton_models/neurolabel_report/1")
    prune.add_argument("--heads", type=int, required=True, help="attention heads to remove, over all layers")
    prune.add_argument("--version", required=True, help="version folder to write next to the source")
    prune.add_argument("--scoring-reports", type=int, default=300, help="generated reports that rank the heads (default 300)")
    prune.add_argument("--scoring-seed", type=int, default=4242, help="their generator seed (default 4242)")
    prune.add_argument("--validation-reports", type=int, default=2000,
                       help="generated reports the thresholds are chosen on (default 2000)")
    prune.add_argument("--validation-seed", type=int, default=20240602,
                       help="their generator seed (default 20240602; not the training corpus's)")
    prune.add_argument("--release", default="", help="release name stored with the model (default: today's date)")

    classify = command("classify", _classify, "label a JSONL file of reports (id, text) through Triton, or in-process")
    classify.add_argument("input", metavar="IN.jsonl", help="reports, one JSON object a line with 'id' and 'text'")
    classify.add_argument("-o", "--output", required=True, metavar="OUT.jsonl",
                          help="one line per report: id, probabilities, labels, model")
    classify.add_argument("--local", action="store_true",
                          help="run the model in-process with onnxruntime instead of through Triton")

    inspect = command("inspect", _inspect, "show the labels a DICOM file carries (private tags or SR) as JSON")
    inspect.add_argument("file", metavar="FILE.dcm", help="a DICOM file (a tagged instance or neurolabel's SR)")

    hl7 = command("hl7", _hl7, "HL7 messages that were rejected: list them, or run them through intake again")
    hl7_commands = hl7.add_subparsers(dest="hl7_command", required=True, metavar="ACTION")
    rejected = hl7_commands.add_parser("rejected", help="list rejected messages (newest first) and why", parents=[common])
    rejected.add_argument("--all", action="store_true", help="include those already reprocessed")
    rejected.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    rejected.add_argument("--json", action="store_true", help="machine-readable output")
    again = hl7_commands.add_parser(
        "reprocess", help="run rejected messages through intake again (e.g. after fixing [hl7])", parents=[common]
    )
    again.add_argument("ids", nargs="*", type=int, help="hl7_messages ids")
    again.add_argument("--all", action="store_true", help="every rejected message not yet reprocessed")
    again.add_argument("--json", action="store_true", help="machine-readable output")

    backfill = command("backfill", _backfill, "label a file of historic reports through Triton and link them to the "
                       "studies already indexed; resumable (run it again after an interruption)")
    backfill.add_argument("file", metavar="FILE", help="reports: JSONL (id, text, optional accession_number, "
                          "study_instance_uid, patient_id, study_date), CSV with those columns, or HL7 messages")
    backfill.add_argument("--format", choices=("jsonl", "csv", "hl7"),
                          help="the file's format (default: from its extension)")
    backfill.add_argument("--batch", type=int, default=256, help="reports per batch sent to Triton (default 256)")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"neurolabel: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"neurolabel: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as exc:
        print(f"neurolabel: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
