"""`python -m tests.dicom.listener_process CONFIG`: the DICOM listener alone as a process, as `neurolabel run` starts
it (used by the kill -9 test). Logs go to stderr; the line "DICOM listener ... on HOST:PORT" gives the port."""

from __future__ import annotations

import sys

from daemon.app import run_until_signalled
from daemon.config import load_config
from daemon.dicom.scp import build_dicom_listener
from daemon.ops.logs import configure_logging

if __name__ == "__main__":
    config = load_config(sys.argv[1])
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    run_until_signalled(config, factories=[build_dicom_listener])
