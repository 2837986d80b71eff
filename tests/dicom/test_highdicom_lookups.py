"""highdicom's IOD table look-ups, memoized: highdicom's own answers, installed where the SR path calls them."""

from __future__ import annotations

import highdicom.base
import highdicom.base_content
import pytest
from highdicom import _standard_utils

from daemon.dicom import highdicom_lookups

SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
]


@pytest.mark.parametrize("uid", SOP_CLASSES)
def test_pixel_data_answers_are_highdicoms(uid: str) -> None:
    check = highdicom_lookups.memoized_pixel_data_check(_standard_utils.does_iod_have_pixel_data)
    expected = _standard_utils.does_iod_have_pixel_data(uid)
    assert check(uid) is expected
    assert check(uid) is expected  # answered from the cache the second time


def test_images_have_pixel_data_and_documents_do_not() -> None:
    check = highdicom_lookups.memoized_pixel_data_check(_standard_utils.does_iod_have_pixel_data)
    assert check("1.2.840.10008.5.1.4.1.1.4") is True
    assert check("1.2.840.10008.5.1.4.1.1.88.33") is False


@pytest.mark.parametrize("uid", SOP_CLASSES)
@pytest.mark.parametrize("attribute", ["ContentDate", "ContentTime", "PixelData", "AcquisitionDateTime"])
def test_attribute_answers_are_highdicoms(attribute: str, uid: str) -> None:
    check = highdicom_lookups.memoized_attribute_check(_standard_utils.is_attribute_in_iod)
    assert check(attribute, uid) is _standard_utils.is_attribute_in_iod(attribute, uid)
    excluded = ["IconImageSequence"]
    assert check(attribute, uid, excluded) is _standard_utils.is_attribute_in_iod(attribute, uid, excluded)


def test_an_unknown_sop_class_still_raises() -> None:
    check = highdicom_lookups.memoized_pixel_data_check(_standard_utils.does_iod_have_pixel_data)
    for _ in range(2):
        with pytest.raises(KeyError):
            check("1.2.3.4.5")


def test_install_puts_the_wrappers_where_the_sr_path_calls_them_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(highdicom.base_content, "does_iod_have_pixel_data", _standard_utils.does_iod_have_pixel_data)
    monkeypatch.setattr(highdicom.base, "is_attribute_in_iod", _standard_utils.is_attribute_in_iod)
    highdicom_lookups.install()
    pixel_check, attribute_check = highdicom.base_content.does_iod_have_pixel_data, highdicom.base.is_attribute_in_iod
    assert pixel_check is not _standard_utils.does_iod_have_pixel_data
    assert attribute_check is not _standard_utils.is_attribute_in_iod
    highdicom_lookups.install()
    assert highdicom.base_content.does_iod_have_pixel_data is pixel_check
    assert highdicom.base.is_attribute_in_iod is attribute_check
