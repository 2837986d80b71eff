"""Remote Triton: TLS (server and client certificates), an access header, and load spread with failover.

The pure spreading logic is tested with stand-in members; the rest against real tritonserver processes
started with --grpc-use-ssl-mutual and --grpc-restricted-protocol, serving the fake_report fixture model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from daemon.config import Config, ConfigError, with_overrides
from daemon.inference.prediction import InferenceUnavailable, ModelInfo, Prediction
from daemon.inference.triton_client import TritonClassifier
from daemon.inference.triton_remote import SpreadClassifier, access_from_config, connect_classifier, readiness
from daemon.labels import LABEL_KEYS
from tests.peers.triton import FIXTURE_REPOSITORY, Certificates, make_certificates, require_tritonserver, running_triton

TOKEN_KEY = "neurolabel-key"
TOKEN = "s3cret-token"
HEADER = f"triton-grpc-protocol-{TOKEN_KEY}"


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("triton", "message"),
    [
        ({"tls": True}, "set triton.url as well"),
        ({"extra_urls": ("b:8001",)}, "set triton.url as well"),
        ({"url": "a:8001", "extra_urls": ("not a url",)}, "triton.extra_urls must be host:port"),
        ({"url": "a:8001", "tls_ca": "/ca.pem"}, "triton.tls is false"),
        ({"url": "a:8001", "tls": True, "tls_cert": "/c.pem"}, "go together"),
        ({"url": "a:8001", "auth_header": "x-key"}, "go together"),
        ({"url": "a:8001", "auth_header": "X Key", "auth_token_file": "/t"}, "lower-case gRPC header"),
    ],
)
def test_invalid_remote_settings_name_the_key(test_config: Config, triton: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        with_overrides(test_config, triton=triton)


def test_access_reads_the_token_and_checks_files(test_config: Config, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\nignored\n")
    config = with_overrides(
        test_config,
        triton={
            "url": "a:8001", "tls": True, "tls_ca": str(token), "auth_header": HEADER, "auth_token_file": str(token)
        },
    )
    access = access_from_config(config.triton)
    assert access.headers == {HEADER: TOKEN}
    assert access.client_options == {"ssl": True, "root_certificates": str(token)}
    assert TOKEN not in repr(access)
    missing = with_overrides(config, triton={"auth_token_file": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="triton.auth_token_file: cannot read"):
        access_from_config(missing.triton)
    assert readiness(missing) == (False, f"triton.auth_token_file: cannot read {tmp_path / 'missing'}")


async def test_one_url_gives_a_plain_triton_classifier(test_config: Config) -> None:
    async with connect_classifier(with_overrides(test_config, triton={"url": "a:8001"})) as single:
        assert isinstance(single, TritonClassifier)
    config = with_overrides(test_config, triton={"url": "a:8001", "extra_urls": ("b:8001",)})
    async with connect_classifier(config) as spread:
        assert isinstance(spread, SpreadClassifier) and spread.urls == ("a:8001", "b:8001")


# --- spreading, with stand-in servers ----------------------------------------------------------------


class StandIn:
    """A member that records the batches it got; `down` makes it raise InferenceUnavailable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.batches: list[list[str]] = []
        self.down = False
        self.closed = False

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        if self.down:
            raise InferenceUnavailable(f"{self.name} is down")
        self.batches.append(list(texts))
        return [
            Prediction(probabilities={"abnormal": 0.5}, labels={"abnormal": 1}, model=f"{self.name}:{text}")
            for text in texts
        ]

    async def is_ready(self) -> bool:
        return not self.down

    async def model_info(self) -> ModelInfo:
        if self.down:
            raise InferenceUnavailable(f"{self.name} is down")
        return ModelInfo(name=self.name, version="1", labels=LABEL_KEYS, thresholds={})

    async def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _spread(count: int, part_size: int = 4) -> tuple[SpreadClassifier, list[StandIn], Clock]:
    members = [StandIn(f"s{i}") for i in range(count)]
    clock = Clock()
    return SpreadClassifier([(m.name, m) for m in members], part_size=part_size, clock=clock), members, clock


async def test_a_batch_is_split_over_the_servers_in_order() -> None:
    spread, members, _ = _spread(3)
    texts = [str(n) for n in range(12)]
    predictions = await spread.classify(texts)
    assert [p.model.split(":")[1] for p in predictions] == texts
    assert [len(m.batches) for m in members] == [1, 1, 1]
    assert sorted(len(m.batches[0]) for m in members) == [4, 4, 4]
    assert await spread.classify([]) == []


async def test_small_batches_take_turns() -> None:
    spread, members, _ = _spread(3)
    for n in range(6):
        await spread.classify([f"t{n}"])
    assert [len(m.batches) for m in members] == [2, 2, 2]


async def test_a_server_that_fails_is_left_out_then_tried_again() -> None:
    spread, members, clock = _spread(2)
    members[1].down = True
    texts = [str(n) for n in range(8)]
    predictions = await spread.classify(texts)
    assert [p.model for p in predictions] == [f"s0:{t}" for t in texts]  # s1's half went to s0
    assert spread.healthy() == ("s0",)
    members[1].down = False
    await spread.classify(texts)
    assert members[1].batches == []  # still left out
    clock.now += 10
    await spread.classify(texts)
    assert members[1].batches and spread.healthy() == ("s0", "s1")


async def test_no_server_answering_is_unavailable() -> None:
    spread, members, _ = _spread(2)
    for member in members:
        member.down = True
    with pytest.raises(InferenceUnavailable, match="no Triton server"):
        await spread.classify(["x"])
    assert not await spread.is_ready()
    with pytest.raises(InferenceUnavailable):
        await spread.model_info()
    members[0].down = False
    assert await spread.is_ready()
    assert (await spread.model_info()).name == "s0"
    async with spread:
        pass
    assert all(m.closed for m in members)


# --- real servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Certificates, list]]:
    """Two tritonservers requiring a client certificate and the access header."""
    require_tritonserver()
    folder = tmp_path_factory.mktemp("triton-tls")
    certificates = make_certificates(folder / "certs")
    args = [
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={certificates.server_cert}",
        f"--grpc-server-key={certificates.server_key}",
        f"--grpc-root-cert={certificates.ca}",
        f"--grpc-restricted-protocol=health,metadata,inference,model-config:{TOKEN_KEY}={TOKEN}",
    ]
    with (
        running_triton(folder / "a", extra_args=args) as first,
        running_triton(folder / "b", extra_args=args) as second,
    ):
        yield certificates, [first, second]


def _secured_config(
    test_config: Config, certificates: Certificates, urls: Sequence[str], tmp_path: Path, **changes: object
) -> Config:
    token = tmp_path / "triton-token"
    token.write_text(TOKEN + "\n")
    triton = {
        "url": urls[0],
        "extra_urls": tuple(urls[1:]),
        "model": "fake_report",
        "model_repository": FIXTURE_REPOSITORY,
        "request_timeout_seconds": 5.0,
        "tls": True,
        "tls_ca": str(certificates.ca),
        "tls_cert": str(certificates.client_cert),
        "tls_key": str(certificates.client_key),
        "auth_header": HEADER,
        "auth_token_file": str(token),
        **changes,
    }
    return with_overrides(test_config, triton=triton)


@pytest.mark.triton
async def test_classify_over_mutual_tls_with_the_access_header(
    test_config: Config, secured: tuple, tmp_path: Path
) -> None:
    certificates, servers = secured
    config = _secured_config(test_config, certificates, [servers[0].grpc_url], tmp_path)
    async with connect_classifier(config) as classifier:
        assert await classifier.is_ready()
        info = await classifier.model_info()
        assert info.labels == LABEL_KEYS
        [normal, stroke] = await classifier.classify(["Normal study.", "Acute stroke in the left MCA territory."])
    assert normal.labels["abnormal"] == 0 and stroke.labels["acute_stroke"] == 1 and stroke.labels["abnormal"] == 1
    assert await asyncio.to_thread(readiness, config) == (True, f"{servers[0].grpc_url} model fake_report:1")


@pytest.mark.triton
@pytest.mark.parametrize(
    ("missing", "changes"),
    [
        ("TLS", {"tls": False, "tls_ca": "", "tls_cert": "", "tls_key": ""}),
        ("the client certificate", {"tls_cert": "", "tls_key": ""}),
        ("the server's CA (system CAs only)", {"tls_ca": ""}),
        ("the access header", {"auth_header": "", "auth_token_file": ""}),
    ],
)
async def test_without_what_the_server_requires_it_is_not_ready(
    test_config: Config, secured: tuple, tmp_path: Path, missing: str, changes: dict
) -> None:
    certificates, servers = secured
    config = _secured_config(test_config, certificates, [servers[0].grpc_url], tmp_path, **changes)
    async with connect_classifier(config) as classifier:
        assert not await classifier.is_ready(), f"ready without {missing}"
        with pytest.raises(InferenceUnavailable):
            await classifier.classify(["Normal study."])
    up, detail = await asyncio.to_thread(readiness, config)
    assert not up and servers[0].grpc_url in detail


@pytest.mark.triton
async def test_load_is_spread_over_both_servers_and_survives_one_stopping(
    test_config: Config, secured: tuple, tmp_path: Path
) -> None:
    certificates, servers = secured
    config = _secured_config(test_config, certificates, [s.grpc_url for s in servers], tmp_path)
    texts = [f"report {n}: {'mass effect' if n % 3 == 0 else 'normal'}" for n in range(96)]
    before = [_inferences(certificates, server.grpc_url) for server in servers]
    async with connect_classifier(config) as classifier:
        assert isinstance(classifier, SpreadClassifier)
        predictions = await classifier.classify(texts)
        assert [p.labels["mass"] for p in predictions] == [int(n % 3 == 0) for n in range(96)]
        served = [_inferences(certificates, server.grpc_url) - b for server, b in zip(servers, before)]
        assert all(count >= 32 for count in served), served
        assert await asyncio.to_thread(readiness, config) == (True, _ready_detail(servers, 2))

        servers[1].stop()
        predictions = await classifier.classify(texts)
        assert [p.labels["mass"] for p in predictions] == [int(n % 3 == 0) for n in range(96)]
        assert classifier.healthy() == (servers[0].grpc_url,)
        up, detail = await asyncio.to_thread(readiness, config)
        assert up and detail.startswith("1 of 2 Triton servers ready")


def _ready_detail(servers: Sequence, ready: int) -> str:
    return f"{ready} of {len(servers)} Triton servers ready; " + "; ".join(
        f"{s.grpc_url} model fake_report:1" for s in servers
    )


def _inferences(certificates: Certificates, url: str) -> int:
    """Texts this server has run through fake_report (Triton's statistics API, left unrestricted)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(
        url, ssl=True, root_certificates=str(certificates.ca),
        private_key=str(certificates.client_key), certificate_chain=str(certificates.client_cert),
    )
    try:
        return int(client.get_inference_statistics("fake_report").model_stats[0].inference_count)
    finally:
        client.close()
