"""Files: written and fsynced in the incoming folder, renamed into the UID layout, leftovers removed on start."""

from __future__ import annotations

import errno
from pathlib import Path, PurePosixPath

import pytest

from daemon.dicom.storage import INCOMING_DIR, OutOfSpace, Storage


def test_write_then_place_into_the_layout(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "dicom", min_free_bytes=0)
    storage.prepare()
    incoming = storage.write_incoming([b"header", memoryview(b"-body-")])
    assert incoming.path.parent == tmp_path / "dicom" / INCOMING_DIR
    assert incoming.size == 12
    relative = PurePosixPath("1.2/1.2.3/1.2.3.4.dcm")
    to_sync = storage.place(incoming, relative)
    target = tmp_path / "dicom" / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    assert target.read_bytes() == b"header-body-"
    assert not incoming.path.exists()
    # The new folders' parents and the file's folder must be fsynced for the names to be durable.
    assert to_sync == {tmp_path / "dicom", tmp_path / "dicom" / "1.2", tmp_path / "dicom" / "1.2" / "1.2.3"}
    second = storage.write_incoming([b"again"])
    assert storage.place(second, PurePosixPath("1.2/1.2.3/1.2.3.5.dcm")) == {target.parent}


def test_place_replaces_an_existing_file(tmp_path: Path) -> None:
    storage = Storage(tmp_path, min_free_bytes=0)
    storage.prepare()
    relative = PurePosixPath("1/2/3.dcm")
    storage.place(storage.write_incoming([b"first"]), relative)
    storage.place(storage.write_incoming([b"second"]), relative)
    assert storage.absolute(relative).read_bytes() == b"second"


def test_place_recreates_folders_removed_behind_its_back(tmp_path: Path) -> None:
    storage = Storage(tmp_path, min_free_bytes=0)
    storage.prepare()
    storage.place(storage.write_incoming([b"a"]), PurePosixPath("1/2/3.dcm"))
    for path in (tmp_path / "1" / "2" / "3.dcm", tmp_path / "1" / "2", tmp_path / "1"):
        path.unlink() if path.is_file() else path.rmdir()
    storage.place(storage.write_incoming([b"b"]), PurePosixPath("1/2/4.dcm"))
    assert (tmp_path / "1" / "2" / "4.dcm").read_bytes() == b"b"


def test_prepare_removes_leftover_temporary_files(tmp_path: Path) -> None:
    storage = Storage(tmp_path, min_free_bytes=0)
    storage.prepare()
    storage.write_incoming([b"interrupted"])
    (tmp_path / INCOMING_DIR / "other.part").write_bytes(b"x")
    assert Storage(tmp_path, min_free_bytes=0).prepare() == 2
    assert list((tmp_path / INCOMING_DIR).iterdir()) == []


def test_check_room_keeps_the_reserve(tmp_path: Path) -> None:
    free = Storage(tmp_path, 0).free_bytes()
    Storage(tmp_path, min_free_bytes=0).check_room(1000)
    with pytest.raises(OutOfSpace) as raised:
        Storage(tmp_path, min_free_bytes=free).check_room(1000)
    assert raised.value.errno == errno.ENOSPC
