"""The DICOM listener: a pynetdicom Application Entity (Verification SCP, Storage SCP) and its Component.

pynetdicom calls the handlers here in its association threads. A C-STORE is
handled in that thread up to the commit: decode the header (never the pixel
data), validate the UIDs, hand it to the group committer and write the file as
received, then answer with the status of the commit. Success means the file is
durable under its final name and its index row is committed (this thread
fsyncs the file while the committer renames it and commits; the committer
answers when every fsync is done).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import socketserver
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from daemon import __version__
from daemon.app import Health, Services
from daemon.audit import trail
from daemon.config import Config
from daemon.audit.trail import AuditEvent
from daemon.dicom.committer import IndexCommitter, Outcome, StoreRequest
from daemon.dicom.filemeta import FileMeta, encode_file_header
from daemon.dicom.index import INDEXED_TAGS, IndexRecord, MalformedDataset, header_of, index_record, read_header
from daemon.dicom.index_store import IndexChanges, Receipt
from daemon.dicom.recovery import recover_unsynced
from daemon.dicom.reactor import PROTOCOL_ERROR, acceptor_server_class
from daemon.dicom.security import AssociationPolicy, decide, needs_host_names, peer_names, server_ssl_context
from daemon.dicom.stability import StabilityTracker
from daemon.dicom.storage import IncomingFile, OutOfSpace, Storage
from daemon.dicom.structure import check_data_set
from daemon.dicom.uids import instance_path
from daemon.ops.metrics import StageMetrics

log = logging.getLogger("neurolabel.dicom")

AUDIT_ASSOCIATION = "dicom.association"
# Set on an association once accepted, so that its protocol error is audited once, with its abort.
_ACCEPTED = "neurolabel_accepted"
AUDIT_INSTANCE = "dicom.instance"
STUDY_KIND = "study"
# How long an association thread waits for its instance's commit before answering a failure.
COMMIT_WAIT_SECONDS = 120.0
IMPLEMENTATION_VERSION_NAME = f"NEUROLABEL_{__version__}"[:16]
# Every transfer syntax pynetdicom knows, compressed ones included. When one presentation context proposes
# several, the first of this list that is proposed is accepted: explicit VR little endian first, so that a
# sender with uncompressed data sends it unchanged (pynetdicom's own order starts with implicit VR).
ACCEPTED_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, *(uid for uid in ALL_TRANSFER_SYNTAXES if uid != ExplicitVRLittleEndian)]


class StoreStatus(enum.IntEnum):
    """C-STORE response statuses neurolabel sends (PS3.4 GG.4.2, PS3.7 C.4)."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111  # duplicate_policy = "refuse"
    OUT_OF_RESOURCES = 0xA700  # less than [storage] min_free_bytes free, disk full, index unavailable
    CANNOT_UNDERSTAND = 0xC000  # malformed data set, invalid UID


_OUTCOME_STATUS = {
    Outcome.STORED: StoreStatus.SUCCESS,
    Outcome.REPLACED: StoreStatus.SUCCESS,
    Outcome.DUPLICATE_KEPT: StoreStatus.SUCCESS,
    Outcome.DUPLICATE_REFUSED: StoreStatus.DUPLICATE_SOP_INSTANCE,
    Outcome.FAILED: StoreStatus.OUT_OF_RESOURCES,
}


def build_application_entity(config: Config) -> AE:
    """Our AE: Verification, and every storage SOP class pynetdicom knows with every transfer syntax."""
    settings = config.dicom
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu_bytes
    ae.maximum_associations = settings.max_associations
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.require_called_aet = False  # checked, with the allowlist, when the request arrives (AssociationPolicy)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    return ae


@dataclass
class _AssociationStats:
    calling_ae: str
    peer: str
    started: float
    instances: int = 0
    refused: int = 0
    bytes: int = 0
    studies: set[str] = field(default_factory=set)


class StoreIntake:
    """The pynetdicom event handlers; state shared between association threads is guarded by a lock."""

    def __init__(
        self,
        config: Config,
        storage: Storage,
        committer: IndexCommitter,
        policy: AssociationPolicy,
        implementation_class_uid: str,
        metrics: StageMetrics,
    ) -> None:
        self._config = config
        self._storage = storage
        self._committer = committer
        self._policy = policy
        self._resolve_hosts = needs_host_names(policy)
        self._implementation_class_uid = implementation_class_uid
        self._metrics = metrics
        self._stats: dict[int, _AssociationStats] = {}
        self._lock = threading.Lock()
        self.server: ThreadedAssociationServer | None = None

    def handlers(self) -> list[tuple[Any, ...]]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_RELEASED, self.on_finished, ["released"]),
            (evt.EVT_ABORTED, self.on_finished, ["aborted"]),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_CONN_CLOSE, self.on_closed),
        ]

    # --- association events (notification handlers: exceptions are logged by pynetdicom) ---

    def on_requested(self, event: Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        calling = _ae(request.calling_ae_title)
        called = _ae(request.called_ae_title)
        peer = assoc.requestor.address
        active = len(self.server.active_associations) if self.server is not None else 1
        rejection = decide(
            self._policy,
            called_ae=called,
            calling_ae=calling,
            peer_addresses=peer_names(peer, self._resolve_hosts),
            active_associations=active,
        )
        if rejection is None:
            return
        log.warning("association from %s@%s to %s rejected: %s", calling, peer, called, rejection.explanation)
        self._metrics.dicom_associations.labels("rejected").inc()
        self._committer.audit(AuditEvent(AUDIT_ASSOCIATION, trail.REJECTED, actor=f"{calling}@{peer}",
                                        identifiers={"called_ae_title": called}, detail=rejection.explanation))
        assoc.acse.send_reject(rejection.result, rejection.source, rejection.reason)
        assoc.is_rejected = True
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        calling = _ae(assoc.requestor.ae_title)
        peer = assoc.requestor.address
        with self._lock:
            self._stats[id(assoc)] = _AssociationStats(calling, peer, time.perf_counter())
        setattr(assoc, _ACCEPTED, True)
        self._metrics.dicom_associations.labels("accepted").inc()
        self._committer.audit(AuditEvent(AUDIT_ASSOCIATION, trail.SUCCESS, actor=f"{calling}@{peer}",
                                        detail="accepted"))

    def on_finished(self, event: Event, how: str) -> None:
        with self._lock:
            stats = self._stats.pop(id(event.assoc), None)
        if stats is None:
            return
        seconds = time.perf_counter() - stats.started
        log.info("association from %s@%s %s after %.2f s: %d instances stored (%d bytes, %d studies), %d refused",
                 stats.calling_ae, stats.peer, how, seconds, stats.instances, stats.bytes, len(stats.studies),
                 stats.refused)
        if how == "aborted":
            self._committer.audit(AuditEvent(AUDIT_ASSOCIATION, trail.FAILURE, actor=f"{stats.calling_ae}@{stats.peer}",
                                            detail=f"aborted after {stats.instances} instances"
                                            + _reason(getattr(event.assoc, PROTOCOL_ERROR, None)),
                                            duration_ms=round(seconds * 1000, 1)))
        else:
            self._committer.audit(AuditEvent(AUDIT_ASSOCIATION, trail.SUCCESS, actor=f"{stats.calling_ae}@{stats.peer}",
                                            identifiers={"instances": stats.instances, "refused": stats.refused,
                                                         "studies": len(stats.studies)},
                                            detail="released", duration_ms=round(seconds * 1000, 1)))

    def on_closed(self, event: Event) -> None:
        """A connection whose peer broke the protocol (noted by daemon/dicom/reactor.py) is audited with the
        reason, whether or not it got as far as an association (garbage, a PDU that lies about its length)."""
        reason = getattr(event.assoc, PROTOCOL_ERROR, None)
        if reason is None or getattr(event.assoc, _ACCEPTED, False):
            return  # an accepted association's protocol error is audited with its abort (on_finished)
        requestor = event.assoc.requestor
        actor = f"{_ae(requestor.ae_title) or '?'}@{requestor.address or '?'}"
        self._committer.audit(AuditEvent(AUDIT_ASSOCIATION, trail.FAILURE, actor=actor,
                                         detail=f"protocol error: {reason}"))

    def on_echo(self, event: Event) -> int:
        return int(StoreStatus.SUCCESS)

    # --- C-STORE (intervention handler: returns the status) ---

    def on_store(self, event: Event) -> int | Dataset:
        started = time.perf_counter()
        request = event.request
        assoc = event.assoc
        calling = _ae(assoc.requestor.ae_title)
        actor = f"{calling}@{assoc.requestor.address}"
        transfer_syntax = str(event.context.transfer_syntax)
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        view = request.DataSet.getbuffer()
        try:
            try:
                # One walk checks the structure and reads the header; pydicom reads a deflated one's.
                values = check_data_set(view, transfer_syntax, collect=INDEXED_TAGS)
                record = index_record(
                    header_of(values) if values is not None else read_header(view, transfer_syntax),
                    sop_class_uid=str(request.AffectedSOPClassUID or ""),
                    sop_instance_uid=sop_instance,
                    transfer_syntax_uid=transfer_syntax,
                )
            except MalformedDataset as exc:
                return self._refuse(assoc, actor, sop_instance, StoreStatus.CANNOT_UNDERSTAND, str(exc), started)
            header = encode_file_header(FileMeta(
                sop_class_uid=record.sop_class_uid,
                sop_instance_uid=record.sop_instance_uid,
                transfer_syntax_uid=transfer_syntax,
                implementation_class_uid=self._implementation_class_uid,
                implementation_version_name=IMPLEMENTATION_VERSION_NAME,
                source_ae_title=calling,
            ))
            size = len(header) + len(view)
            try:
                self._storage.check_room(size)
            except OutOfSpace as exc:
                return self._refuse(assoc, actor, sop_instance, StoreStatus.OUT_OF_RESOURCES,
                                    f"storage: {exc.strerror}", started, record.study.study_instance_uid)
            receipt = Receipt(
                record=record,
                path=instance_path(record.study.study_instance_uid, record.series.series_instance_uid,
                                   record.sop_instance_uid),
                size_bytes=size,
                received_at=dt.datetime.now(dt.timezone.utc),
                calling_ae_title=calling,
                peer=assoc.requestor.address,
            )
            # The committer starts on the index rows while this thread writes the file, and renames and
            # commits it while this thread fsyncs it.
            written: Future[IncomingFile] = Future()
            synced: Future[None] = Future()
            committed = self._committer.store(StoreRequest(receipt, written, actor, started, synced))
            write_error = self._write(written, synced, [header, view])
        finally:
            view.release()
        try:
            outcome = committed.result(timeout=COMMIT_WAIT_SECONDS)
        except TimeoutError:
            outcome = Outcome.FAILED
        if write_error is not None:
            return self._refuse(assoc, actor, sop_instance, StoreStatus.OUT_OF_RESOURCES, write_error, started,
                                record.study.study_instance_uid)
        return self._answer(assoc, record, outcome, size, started)

    def _write(self, written: Future[IncomingFile], synced: Future[None], chunks: list[bytes | memoryview]) -> str | None:
        """Write the file, settling `written` before its fsync and `synced` after; the reason on failure."""
        try:
            self._storage.write_incoming(chunks, on_written=written.set_result)
            synced.set_result(None)
            return None
        except OutOfSpace as exc:
            _settle(exc, written, synced)
            return f"storage: {exc.strerror}"
        except BaseException as exc:
            _settle(exc, written, synced)
            if not isinstance(exc, OSError):
                raise
            log.error("cannot write an instance: %s", exc)
            return f"storage error: {exc.strerror or type(exc).__name__}"

    def _answer(self, assoc: Any, record: IndexRecord, outcome: Outcome, size: int, started: float) -> int | Dataset:
        status = _OUTCOME_STATUS[outcome]
        seconds = time.perf_counter() - started
        self._metrics.dicom_instances.labels(outcome.value).inc()
        self._metrics.dicom_store_seconds.observe(seconds)
        with self._lock:
            stats = self._stats.get(id(assoc))
            if stats is not None:
                if status == StoreStatus.SUCCESS:
                    stats.instances += 1
                    stats.bytes += size
                    stats.studies.add(record.study.study_instance_uid)
                else:
                    stats.refused += 1
        if status == StoreStatus.SUCCESS:
            self._metrics.dicom_bytes.labels(outcome.value).inc(size)
            log.debug("stored %s (study %s, %d bytes, %s) in %.1f ms", record.sop_instance_uid,
                      record.study.study_instance_uid, size, outcome.value, seconds * 1000)
            return int(status)
        log.warning("instance %s of study %s not stored: %s", record.sop_instance_uid,
                    record.study.study_instance_uid, outcome.value)
        comment = "duplicate SOP Instance UID" if outcome is Outcome.DUPLICATE_REFUSED else "index unavailable"
        return _status_dataset(status, comment)

    def _refuse(
        self, assoc: Any, actor: str, sop_instance: str, status: StoreStatus, reason: str, started: float,
        study_uid: str | None = None,
    ) -> Dataset:
        seconds = time.perf_counter() - started
        log.warning("instance %s refused (%s): %s", sop_instance[:64] or "?", status.name, reason)
        self._metrics.dicom_instances.labels(status.name.lower()).inc()
        with self._lock:
            stats = self._stats.get(id(assoc))
            if stats is not None:
                stats.refused += 1
        self._committer.audit(AuditEvent(
            AUDIT_INSTANCE, trail.REJECTED, actor=actor,
            identifiers={"sop_instance_uid": sop_instance[:64] or None, "study_instance_uid": study_uid},
            detail=f"{status.name}: {reason}", duration_ms=round(seconds * 1000, 3),
        ))
        return _status_dataset(status, reason)


def _settle(error: BaseException, *futures: Future[Any]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


def _reason(protocol_error: str | None) -> str:
    return f": protocol error: {protocol_error}" if protocol_error else ""


def _status_dataset(status: StoreStatus, comment: str) -> Dataset:
    response = Dataset()
    response.Status = int(status)
    response.ErrorComment = comment[:64]
    return response


def _ae(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip()


class DicomListener:
    """Component: the Storage SCP on [dicom] host:port, its index committer and the stability timers."""

    name = "dicom"

    def __init__(self, services: Services) -> None:
        self._services = services
        config = services.config
        self._storage = Storage(config.storage.path, config.storage.min_free_bytes)
        self._committer = IndexCommitter(services.database, self._storage, config.dicom.duplicate_policy,
                                         on_commit=self._on_commit)
        self._policy = AssociationPolicy.from_config(config.dicom.ae_title, config.dicom.allowed_calling_aes,
                                                     config.dicom.max_associations)
        self._tracker: StabilityTracker | None = None
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def tracker(self) -> StabilityTracker:
        assert self._tracker is not None
        return self._tracker

    async def start(self) -> None:
        config = self._services.config
        removed = await asyncio.to_thread(self._storage.prepare)
        if removed:
            log.info("removed %d incomplete files left by an earlier run", removed)
        await asyncio.to_thread(recover_unsynced, self._services.database, self._storage)
        self._tracker = StabilityTracker(self._services.database, config.dicom.stable_after_seconds,
                                         self._services.work_signal, asyncio.get_running_loop(),
                                         notify_on_arrival=(STUDY_KIND,))
        self._committer.start()
        ae = build_application_entity(config)
        intake = StoreIntake(config, self._storage, self._committer, self._policy, ae.implementation_class_uid,
                             self._services.metrics)
        server = ae.make_server(
            (config.dicom.host, config.dicom.port),
            ae_title=config.dicom.ae_title,
            ssl_context=server_ssl_context(config.dicom.tls),
            evt_handlers=intake.handlers(),
            server_class=acceptor_server_class(),
        )
        intake.server = server
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="neurolabel-dicom-accept", daemon=True)
        self._thread.start()
        recovered = await self.tracker.recover()
        log.info("DICOM listener %s on %s:%d%s (%d studies still receiving)", config.dicom.ae_title,
                 config.dicom.host, self.port, " with TLS" if config.dicom.tls.enabled else "", recovered)

    async def stop(self, deadline: float) -> None:
        server = self._server
        if server is not None:
            await asyncio.to_thread(socketserver.BaseServer.shutdown, server)
            server.server_close()
            await asyncio.to_thread(_drain_associations, server, deadline)
        await asyncio.to_thread(self._committer.stop, max(1.0, deadline - time.monotonic()))
        if self._tracker is not None:
            await self._tracker.close()

    def health(self) -> Health:
        if self._server is None or self._thread is None or not self._thread.is_alive():
            return Health(up=False, detail="not listening")
        if not self._committer.running:
            return Health(up=False, detail="index committer stopped")
        active = len(self._server.active_associations)
        return Health(up=True, detail=f"{self._services.config.dicom.ae_title} on port {self.port}, "
                                      f"{active} associations, {self.tracker.pending} studies receiving")

    def _on_commit(self, changes: IndexChanges) -> None:
        """Committer thread, after each commit: push back the studies' stability timers, wake study workers."""
        if self._tracker is not None:
            self._tracker.arrived_threadsafe(changes.last_received)


def _drain_associations(server: ThreadedAssociationServer, deadline: float) -> None:
    """Let running associations finish until `deadline`, then abort the rest."""
    for assoc in server.active_associations:
        assoc.join(max(0.0, deadline - time.monotonic()))
    for assoc in server.active_associations:
        log.warning("aborting association from %s at shutdown", assoc.requestor.address)
        assoc.abort()


def build_dicom_listener(services: Services) -> DicomListener | None:
    """Component factory (daemon/app.py): None when [dicom] enabled is false."""
    if not services.config.dicom.enabled:
        return None
    return DicomListener(services)

