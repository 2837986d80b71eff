"""highdicom's IOD table look-ups, answered once per SOP class instead of scanning its tables on every SR.

Building an SR document, highdicom asks its copy of the standard's tables whether the first evidence
instance's SOP class has pixel data (`does_iod_have_pixel_data`, for the acquisition equipment it lists as
contributing equipment) and whether the SR's IOD has Content Date and Time (`is_attribute_in_iod`). Each
answer is a scan over every attribute of every module of the IOD (~5,000 entries for MR): 1.5-2 ms of CPU
per SR, the largest single cost of the document around the label content. The tables never change while
the process runs, so the answers depend only on their arguments.

`install` puts memoizing wrappers in the namespaces of the two highdicom modules that call them on the SR
path (`highdicom.base_content` and `highdicom.base`); the document built is unchanged (the same functions
answer, once per argument; tests/dicom/test_highdicom_lookups.py checks the answers against highdicom's own
and tests/dicom/test_sr_template.py the documents byte for byte). Calling it again does nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import highdicom.base
import highdicom.base_content
from highdicom import _standard_utils

# Marks a wrapper installed here (so that install is idempotent and the original stays reachable).
_MARK = "_neurolabel_memoized"


def install() -> None:
    """Memoize the two look-ups where highdicom's SR construction calls them; idempotent."""
    if not getattr(highdicom.base_content.does_iod_have_pixel_data, _MARK, False):
        highdicom.base_content.does_iod_have_pixel_data = memoized_pixel_data_check(  # type: ignore[attr-defined]
            _standard_utils.does_iod_have_pixel_data
        )
    if not getattr(highdicom.base.is_attribute_in_iod, _MARK, False):
        highdicom.base.is_attribute_in_iod = memoized_attribute_check(  # type: ignore[attr-defined]
            _standard_utils.is_attribute_in_iod
        )


def memoized_pixel_data_check(original: Callable[[str], bool]) -> Callable[[str], bool]:
    """`original(sop_class_uid)` remembered per UID (an unknown UID still raises, every time)."""
    cached = functools.lru_cache(maxsize=256)(lambda uid: original(uid))

    @functools.wraps(original)
    def check(sop_class_uid: str) -> bool:
        return bool(cached(str(sop_class_uid)))

    setattr(check, _MARK, True)
    return check


def memoized_attribute_check(
    original: Callable[..., bool],
) -> Callable[..., bool]:
    """`original(attribute, sop_class_uid, exclude_path_elements)` remembered per arguments."""
    cached = functools.lru_cache(maxsize=1024)(
        lambda attribute, uid, exclude: original(attribute, uid, list(exclude) if exclude is not None else None)
    )

    @functools.wraps(original)
    def check(attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None) -> bool:
        exclude: Any = tuple(exclude_path_elements) if exclude_path_elements is not None else None
        return bool(cached(str(attribute), str(sop_class_uid), exclude))

    setattr(check, _MARK, True)
    return check
