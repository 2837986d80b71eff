"""Images/s received and written by neurolabel's DICOM listener against DCMTK's storescp, same files, same run.

    python bench/dicom_intake.py [--objects 200] [--rounds 3] [--parallel 4] [--split-receivers N] [--json results.json]

Both receivers run as their own process on loopback and are fed by DCMTK's storescu (TCP_NODELAY=1):
`storescp --fork` writing each object to a file, and neurolabel's listener alone (`serve` below: the DICOM
component of `neurolabel run`, with its SQLite index, fsyncs and audit rows). Each round starts both afresh
on empty folders and sends the same objects to each, alternating which goes first; the figure is the
median rate over rounds and the median over rounds of the ratio neurolabel/storescp of the two runs of
a round. Scenarios: one association, and `--parallel`
associations at once (the objects split between them), for ~0.5 MB MR objects (512x512x16 bit) and small
objects (64x64x16 bit, ~9 KB). `--labelling-load` adds, for the MR scenarios, rounds of neurolabel alone
against neurolabel while another process keeps the bundled Triton server (started as the daemon starts it,
at [triton] cpu_priority) classifying reports flat out (what the daemon's classify workers do at full speed;
needs the `server` extra and the model in triton_models/), alternating, and reports the drop in rate.
storescu sends P-DATA-TF PDUs of at most 128 KiB (DCMTK's limit) and storescp announces 16 KiB.
A short fsync probe (median write+fsync of a 0.5 MB file in the storage folder) is reported for context:
storescp does not fsync, neurolabel must before it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DCMTK_ENV = {"TCP_NODELAY": "1"}
AE_TITLE = "NEUROLABEL"


@dataclass(frozen=True)
class Scenario:
    name: str
    pixels: int  # rows = columns
    associations: int


@dataclass(frozen=True)
class Result:
    scenario: str
    receiver: str
    objects: int
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def dcmtk_tool(name: str) -> str:
    for folder in ("/usr/bin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    raise SystemExit(f"DCMTK's {name} not found (apt-get install dcmtk)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_objects(folder: Path, count: int, pixels: int, parts: int) -> list[Path]:
    """`count` MR objects of pixels x pixels x 16 bit, one study, split into `parts` sub-folders."""
    import numpy as np
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    base = dcmread(get_testdata_file("MR_small.dcm"))
    study, series = generate_uid(), generate_uid()
    pixel_data = np.random.default_rng(0).integers(0, 4000, (pixels, pixels), dtype=np.uint16).tobytes()
    dirs = [folder / f"part{index}" for index in range(parts)]
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        dataset = base.copy()
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.InstanceNumber = number + 1
        dataset.Rows = dataset.Columns = pixels
        dataset.PixelData = pixel_data
        dataset.save_as(dirs[number % parts] / f"{number:06d}.dcm", enforce_file_format=True)
    return dirs


def send(ports: Sequence[int], parts: Sequence[Path]) -> float:
    """Run one storescu per folder at once, the folders dealt out over `ports`; seconds until all have finished."""
    env = {**os.environ, **DCMTK_ENV}
    storescu = dcmtk_tool("storescu")
    started = time.perf_counter()
    processes = [
        subprocess.Popen([storescu, "-aec", AE_TITLE, "+sd", "127.0.0.1", str(ports[number % len(ports)]), str(part)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for number, part in enumerate(parts)
    ]
    failures = [process.stderr.read().decode() for process in processes if process.wait() != 0]  # type: ignore[union-attr]
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"storescu failed: {failures[0][-500:]}")
    return elapsed


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("receiver did not start listening")


@contextmanager
def storescp(state: Path, max_pdu: int) -> Iterator[list[int]]:
    """storescp as DCMTK ships it (it announces 16 KiB PDUs; `max_pdu` is neurolabel's). Yields its port."""
    port = free_port()
    out = state / "storescp"
    out.mkdir()
    process = subprocess.Popen([dcmtk_tool("storescp"), "--fork", "-aet", AE_TITLE, "-od", str(out), "-uf", str(port)],
                               env={**os.environ, **DCMTK_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        yield [port]
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def neurolabel(state: Path, max_pdu: int) -> Iterator[list[int]]:
    """neurolabel's DICOM listener alone, as `neurolabel run` starts it. Yields its port."""
    port = free_port()
    config = state / "neurolabel.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state}"\nlog_level = "WARNING"\n'
        f'[dicom]\nport = {port}\nae_title = "{AE_TITLE}"\nmax_pdu_bytes = {max_pdu}\n'
        f'[storage]\npath = "{state / "dicom"}"\nmin_free_bytes = 0\n'
        f'[database]\nurl = "sqlite:///{state / "neurolabel.db"}"\n'
    )
    process = subprocess.Popen([sys.executable, __file__, "serve", str(config)], cwd=REPO_ROOT)
    try:
        wait_listening(port, process)
        yield [port]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def split_neurolabel(processes: int) -> Callable[[Path, int], AbstractContextManager[list[int]]]:
    """`processes` independent neurolabel listeners, each with its own database and folder, the associations
    dealt out over them: what no shared index or GIL could cost a listener spread over that many processes
    (an upper bound for one, not a configuration neurolabel offers)."""

    @contextmanager
    def receivers(state: Path, max_pdu: int) -> Iterator[list[int]]:
        with ExitStack() as stack:
            ports: list[int] = []
            for number in range(processes):
                folder = state / f"listener{number}"
                folder.mkdir()
                ports += stack.enter_context(neurolabel(folder, max_pdu))
            yield ports

    return receivers


def serve(config_path: str) -> None:
    """The DICOM listener alone, as `neurolabel run` starts it (bench child process)."""
    from daemon.app import run_until_signalled
    from daemon.config import load_config
    from daemon.dicom.scp import build_dicom_listener
    from daemon.ops.logs import configure_logging

    config = load_config(config_path)
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    run_until_signalled(config, factories=[build_dicom_listener])


def fsync_probe(folder: Path, size: int = 512 * 1024, count: int = 30) -> float:
    """Median milliseconds to write and fsync a new file of `size` bytes in `folder`."""
    data = os.urandom(size)
    times = []
    for number in range(count):
        path = folder / f"probe{number}"
        started = time.perf_counter()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(descriptor, data)
        os.fsync(descriptor)
        os.close(descriptor)
        times.append((time.perf_counter() - started) * 1000)
        path.unlink()
    return statistics.median(times)


Receiver = Callable[[Path, int], AbstractContextManager[list[int]]]
RECEIVERS: dict[str, Receiver] = {"storescp": storescp, "neurolabel": neurolabel}


def objects_for(scenario: Scenario, objects: int, work: Path) -> list[Path]:
    source = work / f"objects-{scenario.pixels}-{scenario.associations}"
    if not source.exists():
        make_objects(source, objects, scenario.pixels, scenario.associations)
    return sorted(source.iterdir())


def measure(name: str, parts: list[Path], objects: int, work: Path, max_pdu: int,
            receivers: dict[str, Receiver] = RECEIVERS) -> float:
    """Objects/s of one fresh receiver for one transfer."""
    state = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    try:
        with receivers[name](state, max_pdu) as ports:
            return objects / send(ports, parts)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def run_scenario(scenario: Scenario, objects: int, rounds: int, work: Path, max_pdu: int,
                 receivers: dict[str, Receiver] = RECEIVERS) -> list[Result]:
    """Every receiver, alternating which goes first in each round."""
    parts = objects_for(scenario, objects, work)
    rates: dict[str, list[float]] = {name: [] for name in receivers}
    for number in range(rounds):
        for name in list(receivers) if number % 2 == 0 else list(reversed(receivers)):
            rates[name].append(measure(name, parts, objects, work, max_pdu, receivers))
            print(f"  {scenario.name} round {number + 1} {name:10s} {rates[name][-1]:8.1f} objects/s", flush=True)
    return [Result(scenario.name, name, objects, values) for name, values in rates.items()]


def labelling_load(priority: str | None) -> None:
    """Classify synthetic reports through the bundled Triton flat out (bench child process).

    The server runs at [triton] cpu_priority `priority` (the shipped default when None), as the daemon starts
    it. Prints "ready" once Triton answers, then works while resumed: SIGUSR2 resumes ("resumed"), SIGUSR1
    pauses once the batch in flight is answered ("paused"), SIGTERM ends it with the reports/s it kept up
    while working.
    """
    from bench.classifier_throughput import report_texts  # type: ignore[import-not-found]
    from daemon.config import parse_config
    from daemon.inference.triton_client import TritonClassifier
    from daemon.inference.triton_server import BundledTriton, grpc_url, with_concrete_ports

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop, working = asyncio.Event(), asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, working.clear)
        loop.add_signal_handler(signal.SIGUSR2, lambda: (working.set(), print("resumed", flush=True)))
        with tempfile.TemporaryDirectory(prefix="neurolabel-bench-triton-") as state:
            config = with_concrete_ports(parse_config(
                f'[daemon]\nstate_dir = "{state}"\n[triton]\nmodel_repository = "{REPO_ROOT / "triton_models"}"\n'
                "http_port = 0\ngrpc_port = 0\nmetrics_port = 0\n" + (f'cpu_priority = "{priority}"\n' if priority else "")))
            server = BundledTriton(config.triton, config.daemon.state_dir)
            await server.start()
            try:
                async with TritonClassifier(grpc_url(config), config.triton.model, timeout_seconds=600) as client:
                    texts = report_texts(256)
                    await client.classify(texts[:16])
                    print("ready", flush=True)
                    done, busy = 0, 0.0
                    while not stop.is_set():
                        if not working.is_set():
                            print("paused", flush=True)
                            waits = [asyncio.ensure_future(working.wait()), asyncio.ensure_future(stop.wait())]
                            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                            for waiting in pending:
                                waiting.cancel()
                            continue
                        started = time.perf_counter()
                        await client.classify(texts[:64])
                        busy += time.perf_counter() - started
                        done += 64
                    print(f"{done / busy if busy else 0:.1f} reports/s while labelling", flush=True)
            finally:
                await server.stop(time.monotonic() + 30)

    asyncio.run(run())


class Labelling:
    """The labelling load process (labelling_load), paused and resumed between runs."""

    def __init__(self, priority: str | None) -> None:
        self._process = subprocess.Popen([sys.executable, __file__, "labelling-load", *([priority] if priority else [])],
                                         cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if self._expect() != "ready":
            raise RuntimeError("the labelling load did not start (bundled Triton and a model needed)")
        self._expect("paused")

    def _expect(self, line: str | None = None) -> str:
        assert self._process.stdout is not None
        got = self._process.stdout.readline().strip()
        if line is not None and got != line:
            raise RuntimeError(f"labelling load said {got!r}, expected {line!r}")
        return got

    @contextmanager
    def working(self) -> Iterator[None]:
        self._process.send_signal(signal.SIGUSR2)
        self._expect("resumed")
        time.sleep(1.0)  # let Triton get busy on its first batch
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGUSR1)
            self._expect("paused")

    def close(self) -> str:
        self._process.send_signal(signal.SIGTERM)
        assert self._process.stdout is not None
        output = self._process.stdout.read().strip()
        self._process.wait(60)
        return output


def run_labelling(
    scenario: Scenario, load: Labelling, objects: int, rounds: int, work: Path, max_pdu: int
) -> list[Result]:
    """neurolabel alone and while labelling, alternating which goes first in each round."""
    parts = objects_for(scenario, objects, work)
    rates: dict[str, list[float]] = {"neurolabel": [], "neurolabel+labelling": []}
    for number in range(rounds):
        for name in list(rates) if number % 2 == 0 else list(reversed(rates)):
            if name == "neurolabel":
                rates[name].append(measure("neurolabel", parts, objects, work, max_pdu))
            else:
                with load.working():
                    rates[name].append(measure("neurolabel", parts, objects, work, max_pdu))
            print(f"  {scenario.name} round {number + 1} {name:20s} {rates[name][-1]:8.1f} objects/s", flush=True)
    return [Result(scenario.name, name, objects, values) for name, values in rates.items()]


def main(argv: Sequence[str] | None = None) -> None:
    from daemon.config import DicomConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200, help="objects per round and scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4, help="associations in the parallel scenarios")
    parser.add_argument("--small", action=argparse.BooleanOptionalAction, default=True, help="also small objects")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--work", type=Path, help="folder for objects and receivers' state (default: a temp dir)")
    parser.add_argument("--max-pdu", type=int, default=DicomConfig.max_pdu_bytes,
                        help="neurolabel's [dicom] max_pdu_bytes (default: the shipped default)")
    parser.add_argument("--labelling-load", action="store_true",
                        help="also measure neurolabel while the bundled Triton classifies reports flat out")
    parser.add_argument("--labelling-priority", choices=("normal", "low", "idle"),
                        help="[triton] cpu_priority of that Triton (default: the shipped default)")
    parser.add_argument("--split-receivers", type=int, metavar="N",
                        help="also measure, in the parallel scenarios, N independent neurolabel listeners with "
                             "the associations dealt out over them (an upper bound for a listener spread over N "
                             "processes)")
    args = parser.parse_args(argv)

    scenarios = [Scenario("mr-0.5MB-1assoc", 512, 1), Scenario(f"mr-0.5MB-{args.parallel}assoc", 512, args.parallel)]
    if args.small:
        scenarios += [Scenario("small-9KB-1assoc", 64, 1), Scenario(f"small-9KB-{args.parallel}assoc", 64,
                                                                     args.parallel)]
    work = args.work or Path(tempfile.mkdtemp(prefix="neurolabel-bench-dicom-"))
    work.mkdir(parents=True, exist_ok=True)
    probe = fsync_probe(work)
    print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"write+fsync of 0.5 MB: {probe:.2f} ms (median)", flush=True)
    results: list[Result] = []
    split = f"neurolabel x{args.split_receivers}" if args.split_receivers else None
    for scenario in scenarios:
        receivers = RECEIVERS
        if split is not None and scenario.associations > 1:
            receivers = {**RECEIVERS, split: split_neurolabel(args.split_receivers)}
        results += run_scenario(scenario, args.objects, args.rounds, work, args.max_pdu, receivers)
    loaded: list[Result] = []
    if args.labelling_load:
        load = Labelling(args.labelling_priority)
        try:
            for scenario in scenarios[:2]:
                loaded += run_labelling(scenario, load, args.objects, args.rounds, work, args.max_pdu)
        finally:
            print(f"  labelling load: {load.close()}")
    summary = []
    for scenario in scenarios:
        by_receiver = {result.receiver: result for result in results if result.scenario == scenario.name}
        ours, theirs = by_receiver["neurolabel"].rates, by_receiver["storescp"].rates
        # The ratio of each round's adjacent runs: slow drifts of a shared machine cancel out.
        paired = statistics.median(mine / other for mine, other in zip(ours, theirs))
        summary.append({"scenario": scenario.name, "storescp": round(statistics.median(theirs), 1),
                        "neurolabel": round(statistics.median(ours), 1), "ratio": round(paired, 3),
                        "ratio_range": [round(min(m / o for m, o in zip(ours, theirs)), 3),
                                        round(max(m / o for m, o in zip(ours, theirs)), 3)]})
        if split is not None and split in by_receiver:
            theirs_split = by_receiver[split].rates
            ratios = [mine / other for mine, other in zip(theirs_split, theirs)]
            summary.append({"scenario": f"{scenario.name}, {split}", "storescp": round(statistics.median(theirs), 1),
                            "neurolabel": round(statistics.median(theirs_split), 1),
                            "ratio": round(statistics.median(ratios), 3),
                            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]})
    print("\n| scenario | storescp objects/s | neurolabel objects/s | ratio (median of rounds) | range |")
    print("|---|---|---|---|---|")
    for row in summary:
        low, high = row["ratio_range"]
        print(f"| {row['scenario']} | {row['storescp']} | {row['neurolabel']} | {row['ratio']:.0%} | "
              f"{low:.0%}-{high:.0%} |")
    for scenario in scenarios[:2] if loaded else []:
        by_name = {result.receiver: result.rates for result in loaded if result.scenario == scenario.name}
        alone, busy = by_name["neurolabel"], by_name["neurolabel+labelling"]
        # Paired as above: each round's run while labelling against the run without, on the same machine state.
        drops = [1 - with_load / without for with_load, without in zip(busy, alone)]
        drop = statistics.median(drops)
        summary.append({"scenario": scenario.name + "+labelling", "neurolabel_alone": round(statistics.median(alone), 1),
                        "neurolabel": round(statistics.median(busy), 1), "drop": round(drop, 3),
                        "drop_range": [round(min(drops), 3), round(max(drops), 3)]})
        print(f"| {scenario.name} while labelling | | {statistics.median(busy):.1f} "
              f"(alone {statistics.median(alone):.1f}) | drop {drop:.0%} | {min(drops):.0%}-{max(drops):.0%} |")
    if args.json:
        args.json.write_text(json.dumps({"fsync_ms": probe, "summary": summary,
                                         "results": [asdict(result) for result in [*results, *loaded]]}, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "labelling-load":
        labelling_load(sys.argv[2] if len(sys.argv) > 2 else None)
    else:
        main()
