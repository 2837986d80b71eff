"""What hl7apy knows about HL7 v2, as this daemon uses it: versions, message structures, field names, tables.

hl7apy is the reference of record for the standard. Its full object tree
costs ~7 ms per message, so the parser reads field values itself, by the
positions and value sets looked up here (once, then cached: the data is
static).
"""

from __future__ import annotations

import functools
import re

import hl7apy
from hl7apy.exceptions import ChildNotFound

# Value sets are taken from this version's tables (2.1 to 2.3 ship none).
TABLE_VERSION = "2.5"
_VERSION = re.compile(r"^2\.(\d+)(?:\.(\d+))?")


@functools.lru_cache(maxsize=1)
def supported_versions() -> tuple[str, ...]:
    return tuple(sorted(hl7apy.SUPPORTED_LIBRARIES, key=_version_key))


@functools.lru_cache(maxsize=64)
def reference_version(version: str) -> str | None:
    """The hl7apy library for an MSH-12 value: exact, else the nearest older one; None if not HL7 v2."""
    match = _VERSION.match(version.strip())
    if not match:
        return None
    wanted = (2, int(match.group(1)), int(match.group(2) or 0))
    candidates = [v for v in supported_versions() if _version_key(v) <= wanted]
    return candidates[-1] if candidates else None


@functools.lru_cache(maxsize=256)
def field_name(segment: str, position: int, version: str = TABLE_VERSION) -> str:
    """The standard's name of a field, e.g. field_name("OBR", 3) == "filler order number"; "" if not defined."""
    library_version = reference_version(version) or TABLE_VERSION
    try:
        reference = hl7apy.load_reference(f"{segment}_{position}", "Field", library_version)
    except (ChildNotFound, KeyError, ValueError, AttributeError):
        return ""
    name = reference[3] if len(reference) > 3 else None
    return str(name).replace("_", " ").lower() if name else ""


@functools.lru_cache(maxsize=64)
def table_values(table: str, version: str = TABLE_VERSION) -> frozenset[str]:
    """The codes of an HL7 table, e.g. table_values("HL70123") (result status)."""
    library = hl7apy.load_library(version)
    entry = library.TABLES.get(table)
    return frozenset(entry[1]) if entry else frozenset()


@functools.lru_cache(maxsize=64)
def message_structure_exists(message_code: str, trigger_event: str, version: str = TABLE_VERSION) -> bool:
    """True if `message_code^trigger_event` has a message structure in that HL7 version (e.g. ORU^R01, MDM^T02)."""
    library = hl7apy.load_library(reference_version(version) or TABLE_VERSION)
    return f"{message_code}_{trigger_event}" in library.MESSAGES


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
