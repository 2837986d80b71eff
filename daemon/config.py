"""Configuration: `config.toml` parsed once into frozen, typed objects.

Every key has its default here and its documentation in the top-level
`config.toml`; a key that is unknown, mistyped or out of range is a
`ConfigError` that names the key, the file and, where it can be found, the
line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path("config.toml")
CONFIG_ENV_VAR = "NEUROLABEL_CONFIG"


class ConfigError(Exception):
    """A configuration problem a person can fix; the message names it."""


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path = Path("var")
    log_level: str = "INFO"
    log_format: str = "text"
    drain_seconds: float = 30.0
    instance_name: str = ""
    event_loop: str = "auto"

    def validate(self) -> None:
        _one_of("daemon.log_level", self.log_level, ("DEBUG", "INFO", "WARNING", "ERROR"))
        _one_of("daemon.log_format", self.log_format, ("text", "json"))
        _one_of("daemon.event_loop", self.event_loop, ("auto", "uvloop", "asyncio"))
        _positive("daemon.drain_seconds", self.drain_seconds)


@dataclass(frozen=True)
class TlsConfig:
    """TLS for a listener; empty `cert` means plaintext."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    require_client_cert: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.cert)

    def validate_for(self, section: str) -> None:
        if self.cert and not self.key:
            raise ConfigError(f"{section}.tls.key is required when {section}.tls.cert is set")
        if self.require_client_cert and not self.ca:
            raise ConfigError(f"{section}.tls.ca is required when {section}.tls.require_client_cert is true")
        if not self.cert and (self.key or self.require_client_cert):
            raise ConfigError(f"{section}.tls.cert is required when other {section}.tls keys are set")


@dataclass(frozen=True)
class Hl7Config:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 1_048_576
    idle_timeout_seconds: float = 300.0
    accepted_message_types: tuple[str, ...] = ("ORU^R01", "MDM^T02")
    accession_fields: tuple[str, ...] = ("OBR-3", "OBR-2", "OBR-18", "OBR-19")
    allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    allowed_senders: tuple[str, ...] = ()
    default_charset: str = "ASCII"
    tls: TlsConfig = field(default_factory=TlsConfig)

    def validate(self) -> None:
        _port("hl7.port", self.port)
        _positive("hl7.max_message_bytes", self.max_message_bytes)
        _positive("hl7.idle_timeout_seconds", self.idle_timeout_seconds)
        for network in self.allowed_networks:
            _network("hl7.allowed_networks", network)
        self.tls.validate_for("hl7")
        from daemon.hl7.charsets import UnknownCharset, python_codec
        from daemon.hl7.parse import ParseSettings

        try:
            python_codec(self.default_charset)
        except UnknownCharset:
            raise _KeyError("hl7.default_charset", f"'hl7.default_charset': unknown character set {self.default_charset!r}") from None
        try:
            ParseSettings.build(self.accepted_message_types, self.accession_fields, self.default_charset)
        except ValueError as exc:
            key = "hl7.accepted_message_types" if "message type" in str(exc) else "hl7.accession_fields"
            raise _KeyError(key, f"'{key}': {exc}") from None
        for sender in self.allowed_senders:
            if not sender.strip() or sender.count("^") > 1:
                raise _KeyError("hl7.allowed_senders", f"'hl7.allowed_senders': {sender!r} is not APPLICATION or APPLICATION^FACILITY")


@dataclass(frozen=True)
class DicomConfig:
    enabled: bool = True
    ae_title: str = "NEUROLABEL"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aes: tuple[str, ...] = ()
    max_associations: int = 16
    max_pdu_bytes: int = 262_144
    duplicate_policy: str = "keep_first"
    stable_after_seconds: float = 60.0
    tls: TlsConfig = field(default_factory=TlsConfig)

    def validate(self) -> None:
        _ae_title("dicom.ae_title", self.ae_title)
        _port("dicom.port", self.port)
        _positive("dicom.max_associations", self.max_associations)
        _positive("dicom.max_pdu_bytes", self.max_pdu_bytes)
        _one_of("dicom.duplicate_policy", self.duplicate_policy, ("keep_first", "replace", "refuse"))
        _positive("dicom.stable_after_seconds", self.stable_after_seconds, allow_zero=True)
        self.tls.validate_for("dicom")


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path("var/dicom")
    min_free_bytes: int = 512 * 1024 * 1024

    def validate(self) -> None:
        _positive("storage.min_free_bytes", self.min_free_bytes, allow_zero=True)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///var/neurolabel.db"
    auto_migrate: bool = True

    def validate(self) -> None:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", self.url):
            raise ConfigError(f"database.url must start with sqlite:// or postgresql://, got {self.url!r}")


# [triton] cpu_priority of the bundled server: as the daemon, nice 10, or SCHED_IDLE (daemon/inference/triton_server.py).
TRITON_CPU_PRIORITIES = ("normal", "low", "idle")


@dataclass(frozen=True)
class TritonConfig:
    enabled: bool = True
    url: str = ""
    model: str = "neurolabel_report"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_repository: Path = Path("triton_models")
    startup_timeout_seconds: float = 120.0
    request_timeout_seconds: float = 30.0
    cpu_priority: str = "idle"
    extra_urls: tuple[str, ...] = ()
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    auth_header: str = ""
    auth_token_file: str = ""

    @property
    def urls(self) -> tuple[str, ...]:
        """Every remote Triton server: url, then extra_urls (empty when the bundled server is used)."""
        return (self.url, *self.extra_urls) if self.url else ()

    def validate(self) -> None:
        for key, value in (("triton.url", self.url), *(("triton.extra_urls", url) for url in self.extra_urls)):
            if value and not re.match(r"^[\w.\-\[\]:]+:\d+$", value):
                raise ConfigError(f"{key} must be host:port of Triton's gRPC endpoint, got {value!r}")
        for key in ("http_port", "grpc_port", "metrics_port"):
            _port(f"triton.{key}", getattr(self, key))
        _positive("triton.startup_timeout_seconds", self.startup_timeout_seconds)
        _positive("triton.request_timeout_seconds", self.request_timeout_seconds)
        if self.cpu_priority not in TRITON_CPU_PRIORITIES:
            raise ConfigError(f"triton.cpu_priority must be one of {', '.join(TRITON_CPU_PRIORITIES)}, "
                              f"got {self.cpu_priority!r}")
        remote_only = ("extra_urls", "tls", "tls_ca", "tls_cert", "tls_key", "auth_header", "auth_token_file")
        for key in remote_only:
            if getattr(self, key) and not self.url:
                raise ConfigError(f"triton.{key} applies to a remote Triton server: set triton.url as well")
        for key in ("tls_ca", "tls_cert", "tls_key"):
            if getattr(self, key) and not self.tls:
                raise ConfigError(f"triton.{key} is set but triton.tls is false")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("triton.tls_cert and triton.tls_key go together (the client certificate and its key)")
        if bool(self.auth_header) != bool(self.auth_token_file):
            raise ConfigError("triton.auth_header and triton.auth_token_file go together")
        if self.auth_header and not re.fullmatch(r"[a-z0-9][a-z0-9\-_.]*", self.auth_header):
            raise ConfigError(f"triton.auth_header must be a lower-case gRPC header name, got {self.auth_header!r}")


@dataclass(frozen=True)
class WorkersConfig:
    classify_batch_size: int = 64
    concurrency: int = 4
    max_attempts: int = 8
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    lease_seconds: float = 60.0

    def validate(self) -> None:
        for key in ("classify_batch_size", "concurrency", "max_attempts"):
            _positive(f"workers.{key}", getattr(self, key))
        _positive("workers.retry_base_seconds", self.retry_base_seconds)
        _positive("workers.retry_max_seconds", self.retry_max_seconds)
        _positive("workers.lease_seconds", self.lease_seconds)


@dataclass(frozen=True)
class LinkingConfig:
    fallback: str = "patient_date_modality"
    fallback_window_days: int = 1
    multiple_matches: str = "latest"
    unmatched_after_hours: float = 72.0
    recheck_interval_seconds: float = 300.0

    def validate(self) -> None:
        _one_of("linking.fallback", self.fallback, ("none", "patient_date_modality"))
        _one_of("linking.multiple_matches", self.multiple_matches, ("latest", "all", "none"))
        _positive("linking.fallback_window_days", self.fallback_window_days, allow_zero=True)
        _positive("linking.unmatched_after_hours", self.unmatched_after_hours)
        _positive("linking.recheck_interval_seconds", self.recheck_interval_seconds)


@dataclass(frozen=True)
class WritebackConfig:
    sidecar: bool = True
    private_tags: bool = True
    structured_report: bool = True
    forward_to: tuple[str, ...] = ()
    calling_ae_title: str = "NEUROLABEL"
    forward_timeout_seconds: float = 30.0

    def validate(self) -> None:
        for destination in self.forward_to:
            parse_ae_address("writeback.forward_to", destination)
        _ae_title("writeback.calling_ae_title", self.calling_ae_title)
        _positive("writeback.forward_timeout_seconds", self.forward_timeout_seconds)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464

    def validate(self) -> None:
        _port("metrics.port", self.port)


@dataclass(frozen=True)
class AuditConfig:
    report_dir: Path = Path("var/audit-reports")
    log_file: Path = Path("var/audit/audit.jsonl")
    report_schedule: str = "0 6 * * *"

    def validate(self) -> None:
        _cron("audit.report_schedule", self.report_schedule)


@dataclass(frozen=True)
class RetentionConfig:
    schedule: str = "30 3 * * *"
    hl7_raw_days: int = 0
    delete_forwarded_files: bool = False
    forwarded_files_after_hours: float = 24.0
    audit_days: int = 0

    def validate(self) -> None:
        _cron("retention.schedule", self.schedule)
        _positive("retention.hl7_raw_days", self.hl7_raw_days, allow_zero=True)
        _positive("retention.forwarded_files_after_hours", self.forwarded_files_after_hours, allow_zero=True)
        _positive("retention.audit_days", self.audit_days, allow_zero=True)


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    hl7: Hl7Config = field(default_factory=Hl7Config)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    triton: TritonConfig = field(default_factory=TritonConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    linking: LinkingConfig = field(default_factory=LinkingConfig)
    writeback: WritebackConfig = field(default_factory=WritebackConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    source: Path | None = None

    def validate(self) -> None:
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if hasattr(value, "validate"):
                value.validate()


@dataclass(frozen=True)
class AeAddress:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_ae_address(key: str, text: str) -> AeAddress:
    """Parse `AE@host:port`; raise ConfigError naming `key` if malformed."""
    match = re.fullmatch(r"([^@]{1,16})@([\w.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", text)
    if not match:
        raise ConfigError(f"{key}: {text!r} is not of the form AE@host:port")
    _ae_title(key, match.group(1))
    port = int(match.group(3))
    _port(key, port, allow_zero=False)
    return AeAddress(match.group(1), match.group(2).strip("[]"), port)


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config wins, then NEUROLABEL_CONFIG, then ./config.toml."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV_VAR)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file. A missing default file gives the embedded defaults."""
    config_path = resolve_config_path(path)
    if not config_path.exists():
        if path is None and CONFIG_ENV_VAR not in os.environ and config_path == DEFAULT_CONFIG_PATH:
            config = Config()
            config.validate()
            return config
        raise ConfigError(f"configuration file not found: {config_path}")
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {config_path}: {exc.strerror}") from None
    return parse_config(text, source=config_path)


def parse_config(text: str, source: Path | None = None) -> Config:
    """Parse TOML text into a validated Config; errors name the key, file and line."""
    where = str(source) if source else "<config>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    try:
        config = _build(Config, raw, prefix="")
        config = dataclasses.replace(config, source=source)
        config.validate()
    except ConfigError as exc:
        key = getattr(exc, "key", None)
        line = _line_of(text, key) if key else None
        location = f"{where}:{line}" if line else where
        raise ConfigError(f"{location}: {exc}") from None
    return config


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy of `config` with some keys replaced, e.g. with_overrides(c, hl7={"port": 0})."""
    replaced = {name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    result = dataclasses.replace(config, **replaced)
    result.validate()
    return result


class _KeyError(ConfigError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in raw:
        if key not in known:
            full = f"{prefix}{key}"
            suggestion = _closest(key, known)
            hint = f" (did you mean {prefix}{suggestion}?)" if suggestion else ""
            raise _KeyError(full, f"unknown key '{full}'{hint}")
    values = {key: _convert(hints[key], value, f"{prefix}{key}") for key, value in raw.items()}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _KeyError(key, f"'{key}' must be a table ([{key}])")
        return _build(hint, value, prefix=f"{key}.")
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list):
            raise _KeyError(key, f"'{key}' must be a list, got {type(value).__name__}")
        return tuple(_convert(item_type, item, key) for item in value)
    if origin in (typing.Union, types.UnionType):
        raise _KeyError(key, f"'{key}' has an unsupported type")
    if hint is bool:
        if not isinstance(value, bool):
            raise _KeyError(key, f"'{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _KeyError(key, f"'{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _KeyError(key, f"'{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _KeyError(key, f"'{key}' must be a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise _KeyError(key, f"'{key}' must be a non-empty path string, got {value!r}")
        return Path(value)
    raise _KeyError(key, f"'{key}' has an unsupported type {hint!r}")


def _closest(key: str, candidates: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _line_of(text: str, dotted_key: str) -> int | None:
    """Best-effort line number of `dotted_key` in TOML text (section-aware)."""
    parts = dotted_key.split(".")
    leaf = parts[-1]
    section = ".".join(parts[:-1])
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[([^\[\]]+)\]", stripped)
        if header:
            current = header.group(1).strip()
            if current == dotted_key:
                return number
            continue
        if current == section and re.match(rf"^{re.escape(leaf)}\s*=", stripped):
            return number
    return None


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _KeyError(key, f"'{key}' must be one of {', '.join(allowed)}; got {value!r}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise _KeyError(key, f"'{key}' must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _port(key: str, value: int, allow_zero: bool = True) -> None:
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise _KeyError(key, f"'{key}' must be a TCP port (0-65535, 0 picks a free one), got {value!r}")


def _cron(key: str, value: str) -> None:
    from daemon.ops.cron import crontab_trigger

    try:
        crontab_trigger(value)
    except ValueError as exc:
        raise _KeyError(key, f"'{key}': {value!r} is not a cron expression (minute hour day month weekday): {exc}") from None


def _network(key: str, value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _KeyError(key, f"'{key}': {value!r} is not an address or CIDR network") from None


def _ae_title(key: str, value: str) -> None:
    if not 1 <= len(value) <= 16 or "\\" in value or not value.isascii() or value != value.strip() or not value.isprintable():
        raise _KeyError(key, f"'{key}': {value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)")
