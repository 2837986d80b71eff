"""The MLLP listener component: asyncio server, persistent connections, group commit, ACK after commit.

Each connection reads frames (daemon.hl7.framing) and hands each one to the
`GroupCommitter`, which passes whatever has arrived, from every connection,
to `Intake.handle_batch` in one dedicated writer thread: one transaction
and one fsync for the lot. A connection writes a message's ACK only when
its batch has committed, and reads its next message after that, so a
sender sees its acknowledgements in order. The event loop never touches
the database.

Peers outside [hl7] allowed_networks are disconnected at once; TLS (with
optional client certificates) when [hl7.tls] cert is set. A connection
silent for idle_timeout_seconds is closed; a partial message left by a
disconnect or a timeout is discarded (never acknowledged) and audited.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon.audit import trail
from daemon.audit.pending import PendingAudit, ack_event
from daemon.config import Hl7Config, TlsConfig
from daemon.hl7.framing import Discarded, Frame, MllpDecoder, Oversize, frame
from daemon.hl7.intake import Handled, Intake, Received, SenderPolicy, describe_error
from daemon.hl7.parse import ParseSettings
from daemon.store.database import Database

if TYPE_CHECKING:
    from daemon.app import Health, Services

log = logging.getLogger("neurolabel.hl7")

READ_CHUNK = 65536
MAX_BATCH = 256


class GroupCommitter:
    """Serialises intake onto one writer thread and batches whatever is waiting into one commit."""

    def __init__(
        self,
        handle_batch: Callable[[Sequence[Received]], list[Handled]],
        on_committed: Callable[[list[Handled]], None],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._handle_batch = handle_batch
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Received, asyncio.Future[Handled]]] = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="neurolabel-hl7-writer"
        )
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.messages = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hl7-group-commit")

    def put(self, received: Received) -> asyncio.Future[Handled]:
        """Queue a message now (queue order is commit order); the future resolves after its commit."""
        future: asyncio.Future[Handled] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((received, future))
        return future

    async def run_in_writer(self, function: Callable[[], None]) -> None:
        """Run a small piece of database work (connection-level audit rows) on the writer thread."""
        await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def stop(self, deadline: float) -> None:
        """Finish what was submitted (until the deadline), then stop the writer."""
        if self.running:
            try:
                await asyncio.wait_for(self._queue.join(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                log.warning("hl7 writer stopped with %d messages not committed", self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self._max_batch:
                batch.append(self._queue.get_nowait())
            items = [received for received, _ in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._handle_batch, items)
            except Exception as exc:  # handle_batch answers per item; this is a bug, not a bad message
                log.error("hl7 batch of %d failed: %s", len(batch), describe_error(exc))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                    self._queue.task_done()
                continue
            self.batches += 1
            self.messages += len(batch)
            for (_, future), handled in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(handled)
                self._queue.task_done()
            try:
                self._on_committed(results)
            except Exception as exc:  # waking workers is best effort: they also poll
                log.error("hl7 notify after commit failed: %s", describe_error(exc))


@dataclass
class _Connection:
    peer: str
    task: asyncio.Task[None]
    busy: bool = False


class Hl7Listener:
    """Component "hl7": the MLLP server on [hl7] host:port."""

    name = "hl7"

    def __init__(self, services: Services) -> None:
        self._services = services
        self._config: Hl7Config = services.config.hl7
        config = self._config
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in config.allowed_networks)
        settings = ParseSettings.build(config.accepted_message_types, config.accession_fields, config.default_charset)
        self._intake = Intake(
            services.database, settings, SenderPolicy.parse(config.allowed_senders), config.max_message_bytes
        )
        self._server: asyncio.Server | None = None
        self._committer: GroupCommitter | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False
        self._messages_total = services.metrics.hl7_messages
        self._ack_seconds = services.metrics.hl7_ack_seconds
        self._connections_gauge = services.metrics.hl7_connections

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def intake(self) -> Intake:
        return self._intake

    async def start(self) -> None:
        config = self._config
        context = tls_server_context(config.tls) if config.tls.enabled else None
        self._closing = False
        self._committer = GroupCommitter(self._intake.handle_batch, self._committed)
        self._committer.start()
        # "hl7.ack" audit events, written in batches on the writer thread once the ACKs are sent.
        self._ack_audit = PendingAudit(self._services.database, self._committer.run_in_writer)
        self._ack_audit.start()
        self._server = await asyncio.start_server(
            self._serve, config.host, config.port, ssl=context, ssl_handshake_timeout=30.0 if context else None
        )
        log.info("hl7 listener on %s:%d%s", config.host, self.port, " (TLS)" if context else "")

    async def stop(self, deadline: float) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections.values()):
            if not connection.busy:
                connection.task.cancel()
        if self._connections:
            # Busy connections finish the message in hand (its ACK included), up to the deadline.
            await asyncio.wait(set(self._connections), timeout=max(0.0, deadline - time.monotonic()))
        for connection in list(self._connections.values()):
            connection.task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._committer is not None:
            await self._ack_audit.stop()
            await self._committer.stop(deadline)
        if self._server is not None:
            await self._server.wait_closed()

    def health(self) -> Health:
        from daemon.app import Health

        serving = self._server is not None and self._server.is_serving()
        committing = self._committer is not None and self._committer.running
        detail = f"port {self.port}, {len(self._connections)} connections" if serving else "not listening"
        if serving and not committing:
            detail += ", writer stopped"
        return Health(up=serving and committing, detail=detail)

    # --- connections ---------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        host = str(peername[0])
        peer = f"{host}:{peername[1]}"
        if not self._allowed(host):
            log.warning("hl7 connection from %s refused: not in [hl7] allowed_networks", peer)
            writer.close()
            await self._audit_event("hl7.connection", trail.REJECTED, peer, "address not in allowed_networks")
            return
        if self._closing:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(peer, task)
        self._connections[task] = connection
        self._connections_gauge.inc()
        log.info("hl7 connection from %s%s", peer, _certificate_note(writer))
        try:
            await self._read_messages(reader, writer, connection)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError) as exc:
            log.info("hl7 connection from %s lost: %s", peer, type(exc).__name__)
        except Exception as exc:
            log.error("hl7 connection from %s failed: %s", peer, describe_error(exc))
        finally:
            self._connections.pop(task, None)
            self._connections_gauge.dec()
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
            except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
                pass

    async def _read_messages(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        assert self._committer is not None
        decoder = MllpDecoder(self._config.max_message_bytes)
        peer = connection.peer
        while not self._closing:
            try:
                # asyncio.timeout, not wait_for: no task and no extra wakeup per read (a tenth of the loop's CPU).
                async with asyncio.timeout(self._config.idle_timeout_seconds):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                log.info("hl7 connection from %s idle for %.0f s: closed", peer, self._config.idle_timeout_seconds)
                break
            if not data:
                break
            # Every message of this read is queued at once, so a sender that does not wait for each ACK
            # still gets group commit; the ACKs go back in order, each after its own commit.
            submitted: list[tuple[float, asyncio.Future[Handled]]] = []
            for event in decoder.feed(data):
                if isinstance(event, Discarded):
                    await self._discarded(peer, event)
                    continue
                received = Received(
                    payload=event.payload if isinstance(event, Frame) else event.head,
                    peer=peer,
                    received_at=dt.datetime.now(dt.timezone.utc),
                    oversize=event.size if isinstance(event, Oversize) else None,
                )
                submitted.append((time.monotonic(), self._committer.put(received)))
            if not submitted:
                continue
            connection.busy = True
            try:
                for received_at, future in submitted:
                    # Shielded: a connection cancelled while waiting must not cancel a commit under way.
                    handled = await asyncio.shield(future)
                    for ack in handled.acks:
                        writer.write(frame(ack))
                    await writer.drain()
                    self._log(peer, handled, time.monotonic() - received_at)
            finally:
                connection.busy = False
        for event in decoder.finish():
            if isinstance(event, Discarded):
                await self._discarded(peer, event)

    def _committed(self, results: list[Handled]) -> None:
        kinds: set[str] = set()
        statuses: dict[str, int] = {}
        for handled in results:
            kinds |= handled.outcome.queued_kinds
            status = handled.outcome.status
            statuses[status] = statuses.get(status, 0) + 1
        for kind in sorted(kinds):
            self._services.work_signal.notify(kind)
        if results:
            # One INFO line per batch (counts only); each message's own line is DEBUG, or WARNING with a problem.
            log.info(
                "hl7 batch of %d committed in %.1f ms: %s",
                len(results),
                results[0].store_ms,
                ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())),
            )

    def _log(self, peer: str, handled: Handled, seconds: float) -> None:
        outcome = handled.outcome
        header = outcome.header
        self._messages_total.labels(outcome.status).inc()
        if handled.acks:
            self._ack_seconds.observe(seconds)
            self._ack_audit.add(ack_event(peer, handled, seconds))
        if outcome.problem is None and not log.isEnabledFor(logging.DEBUG):
            return
        codes = "/".join(code.value for code in handled.ack_codes) or "no ACK"
        accession = ",".join(outcome.accessions) or "-"
        text = "hl7 %s %s MSH-10=%s accession=%s from %s: %s in %.1f ms (parse %.2f ms, batch %.1f ms)"
        arguments = (
            outcome.status,
            header.message_type if header else "?",
            header.control_id if header else "?",
            accession,
            peer,
            codes,
            seconds * 1000,
            handled.parse_ms,
            handled.store_ms,
        )
        if outcome.problem is not None:
            log.warning(text + ": %s", *arguments, outcome.problem.describe())
        else:
            log.debug(text, *arguments)

    async def _discarded(self, peer: str, event: Discarded) -> None:
        log.warning("hl7 %d bytes from %s discarded: %s", len(event.data), peer, event.reason)
        self._messages_total.labels("discarded").inc()
        await self._audit_event(
            "hl7.framing", trail.FAILURE, peer, f"{len(event.data)} bytes discarded: {event.reason}"
        )

    async def _audit_event(self, kind: str, outcome: str, peer: str, detail: str) -> None:
        if self._committer is None or not self._committer.running:
            return
        database: Database = self._services.database

        def write() -> None:
            with database.begin() as connection:
                trail.record(connection, kind, outcome, actor=peer, detail=detail)

        try:
            await self._committer.run_in_writer(write)
        except Exception as exc:
            log.error("hl7 audit of %s from %s failed: %s", kind, peer, describe_error(exc))

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


def tls_server_context(tls: TlsConfig) -> ssl.SSLContext:
    """A TLS 1.2+ server context from [hl7.tls]; client certificates verified against `ca` when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.ca:
        context.load_verify_locations(cafile=tls.ca)
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def _certificate_note(writer: asyncio.StreamWriter) -> str:
    certificate = writer.get_extra_info("peercert")
    if not certificate:
        return ""
    for entry in certificate.get("subject", ()):
        for key, value in entry:
            if key == "commonName":
                return f" (client certificate CN={value})"
    return " (client certificate)"


def build_hl7_listener(services: Services) -> Hl7Listener | None:
    return Hl7Listener(services) if services.config.hl7.enabled else None
