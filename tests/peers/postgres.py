"""A throwaway PostgreSQL cluster for tests: initdb in a temp folder, loopback on a free port, stopped afterwards.

`postgres_server` (session) starts one cluster; `postgres_url` (function) gives each test its own fresh database
in it. With NEUROLABEL_TEST_POSTGRES_URL set (a superuser URL of a running server, e.g. the one CI starts) no
cluster is started and the per-test databases are created there. Without PostgreSQL's binaries or psycopg the
tests that need it are skipped with the reason.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

EXTERNAL_URL_ENV = "NEUROLABEL_TEST_POSTGRES_URL"
DRIVER = "postgresql+psycopg"
# Debian's layout first, then whatever is on PATH.
BIN_GLOB = "/usr/lib/postgresql/*/bin"
# initdb refuses to run as root; the Debian package creates this user.
SERVICE_USER = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: `url(database)` is a SQLAlchemy URL for one of its databases."""

    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"{DRIVER}://{self.user}@{self.host}:{self.port}/{database}"


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl, newest major version first; None when PostgreSQL is not installed."""
    candidates = sorted(Path("/").glob(BIN_GLOB.lstrip("/")), key=lambda p: _major(p.parent.name), reverse=True)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _major(name: str) -> int:
    return int(name) if name.isdigit() else 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_cluster(
    bin_dir: Path, *, max_connections: int = 300, password: str | None = None, durable: bool = False
) -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a fresh temp folder (owned by the postgres user when run as root); stop and delete.

    With `password`, TCP connections must authenticate with it (scram-sha-256); otherwise every connection
    is trusted.
    """
    as_root = os.geteuid() == 0
    # Not under pytest's tmp_path: that is private to root, and the server must be able to reach its folder.
    folder = Path(tempfile.mkdtemp(prefix="neurolabel-pg-"))
    run_as: dict[str, object] = {}
    if as_root:
        try:
            account = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            pytest.skip(f"running as root and there is no '{SERVICE_USER}' user to run PostgreSQL as")
        os.chown(folder, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data = folder / "data"
    user = SERVICE_USER if as_root else pwd.getpwuid(os.geteuid()).pw_name

    def run(*args: str) -> None:
        result = subprocess.run(  # type: ignore[call-overload]
            args, capture_output=True, text=True, cwd=folder, timeout=120, **run_as
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr or result.stdout}")

    started = False
    try:
        auth = ["--auth=trust"]
        if password is not None:
            password_file = folder / "password"
            password_file.write_text(password + "\n")
            if as_root:
                os.chown(password_file, account.pw_uid, account.pw_gid)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"]
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", user, *auth, "-E", "UTF8", "--locale=C.UTF-8")
        for attempt in range(3):
            port = _free_port()
            settings = [f"-p {port}", f"-k {folder}", "-c listen_addresses=127.0.0.1"]
            settings.append(f"-c max_connections={max_connections}")
            if not durable:
                # A test cluster: durability is not what is under test, speed is welcome.
                settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            options = " ".join(settings)
            try:
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w",
                    "-t", "60", "start")
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(f"PostgreSQL did not start: {_tail(folder / 'server.log')}") from None
                continue
            started = True
            break
        yield PostgresServer(host="127.0.0.1", port=port, user=user)
    finally:
        if started:
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60, cwd=folder, **run_as,  # type: ignore[call-overload]
            )
        shutil.rmtree(folder, ignore_errors=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def create_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(admin_url), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(admin_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq one (psycopg does not know the +driver suffix)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class PostgresPeer:
    """What the fixtures hand out: the admin URL, and fresh databases on demand."""

    admin_url: str
    _names: Iterator[int]

    def new_database(self, prefix: str = "nl_test") -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        from sqlalchemy.engine import make_url

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        create_database(self.admin_url, name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresPeer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    external = os.environ.get(EXTERNAL_URL_ENV)
    if external:
        yield PostgresPeer(admin_url=external, _names=itertools.count(1))
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package 'postgresql'; no initdb/pg_ctl found)")
    with running_cluster(bin_dir) as server:
        yield PostgresPeer(admin_url=server.url(), _names=itertools.count(1))


@pytest.fixture
def postgres_url(postgres_server: PostgresPeer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    url = postgres_server.new_database()
    yield url
    from sqlalchemy.engine import make_url

    drop_database(postgres_server.admin_url, make_url(url).database or "")
