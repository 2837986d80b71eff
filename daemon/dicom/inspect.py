"""`neurolabel inspect FILE.dcm`: the labels a DICOM file carries, in the classify-output shape.

An image carries them in the NEUROLABEL private block; neurolabel's SR carries
them as coded evaluations. The private block is read first; a file with
neither, or whose labels were withdrawn, has no labels to show.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from daemon.dicom.private_tags import STATUS_WITHDRAWN, LabelTagError, LabelTags, read_label_block
from daemon.dicom.sr import read_label_sr_state


class NotReadable(Exception):
    """The path is missing, not a file, or not DICOM (a usage mistake)."""


class NoLabels(Exception):
    """A DICOM file that carries no current labels."""


def inspect_file(path: Path) -> dict[str, object]:
    """{"id", "probabilities", "labels", "model"} with id = the Study Instance UID; raises NotReadable / NoLabels."""
    if not path.exists():
        raise NotReadable(f"{path}: no such file")
    if not path.is_file():
        raise NotReadable(f"{path}: not a file")
    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError:
        raise NotReadable(f"{path}: not a DICOM file (no DICM prefix)") from None
    except OSError as exc:
        raise NotReadable(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise NotReadable(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    try:
        found: LabelTags | None = read_label_block(dataset)
    except LabelTagError as exc:
        raise NoLabels(f"{path}: its NEUROLABEL private block is damaged: {exc}") from None
    if found is None:
        found = read_label_sr_state(dataset)
    if found is None:
        raise NoLabels(f"{path}: carries no neurolabel labels (no NEUROLABEL private block, not a neurolabel SR)")
    if found.status == STATUS_WITHDRAWN or found.record is None:
        raise NoLabels(
            f"{path}: its labels (model {found.model}) were withdrawn at {found.labelled_at.isoformat()}"
        )
    return found.record.as_output()
