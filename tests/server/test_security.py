"""Transport security and auth, through real server processes on loopback.

TLS and mutual TLS use a PKI made here with `cryptography` (two independent CAs); certificate rotation replaces the
files on disk and checks that a new connection sees the new certificate without a restart. Bearer tokens are random
per run, so a token found in the server's output can only have been leaked by the server.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.certificates import CertificateAuthority, KeyPair
from support.models import identity_classifier, write_model
from support.servers import RunningServer, run_cli, start_server

from onnxplain.client import AsyncClient, Client, OnnxplainError
from onnxplain.server.api.auth import required_role
from onnxplain.server.api.tokens import TokenStore, parse_tokens
from onnxplain.server.settings import ConfigurationError
from onnxplain.v1 import explain_service_pb2

MODEL = "rows"
IMAGE = np.arange(32, dtype=np.float32).reshape(1, 4, 8)
# identity_classifier: the score of class r is the mean of row r.
EXPECTED_SCORES = IMAGE[0].mean(axis=1)
CONNECT_TIMEOUT = 10.0


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Pki:
    authority: CertificateAuthority
    other_authority: CertificateAuthority
    client: KeyPair
    other_client: KeyPair


@pytest.fixture(scope="module")
def pki() -> Pki:
    authority, other_authority = CertificateAuthority("onnxplain test CA"), CertificateAuthority("another CA")
    return Pki(authority, other_authority, authority.client(), other_authority.client())


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    write_model(root, MODEL, identity_classifier())
    return root


@pytest.fixture
def serve(repository: Path) -> Iterator[Callable[..., RunningServer]]:
    """Starts servers on the test repository with extra flags, and stops them all afterwards."""
    servers: list[RunningServer] = []

    def start(*flags: str) -> RunningServer:
        servers.append(start_server(repository, *flags))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def tls_flags(folder: Path, server_pair: KeyPair, client_ca: bytes | None = None) -> list[str]:
    certificate, key = server_pair.write(folder, "server")
    flags = ["--tls-cert", str(certificate), "--tls-key", str(key)]
    if client_ca is not None:
        (folder / "clients.crt").write_bytes(client_ca)
        flags += ["--tls-client-ca", str(folder / "clients.crt")]
    return flags


def predict_code(server: RunningServer, **client_options) -> grpc.StatusCode | None:
    """None when a predict call succeeds with the right scores, else the status code it failed with."""
    with Client(server.target, timeout=CONNECT_TIMEOUT, **client_options) as client:
        try:
            prediction = client.predict(MODEL, IMAGE)
        except OnnxplainError as error:
            return error.code
    np.testing.assert_allclose(prediction.scores, EXPECTED_SCORES, rtol=1e-6)
    return None


# ---- TLS and mutual TLS ----------------------------------------------------------------------------------------------


def test_tls_client_trusting_the_ca_is_served(serve, pki: Pki, tmp_path: Path) -> None:
    server = serve(*tls_flags(tmp_path, pki.authority.server()))
    assert predict_code(server, root_certificates=pki.authority.certificate) is None
    assert predict_code(server, root_certificates=pki.other_authority.certificate) is grpc.StatusCode.UNAVAILABLE
    assert predict_code(server) is grpc.StatusCode.UNAVAILABLE, "a plain-text client must not get through"


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(serve, pki: Pki, tmp_path: Path) -> None:
    server = serve(*tls_flags(tmp_path, pki.authority.server(), client_ca=pki.authority.certificate))
    trusting = {"root_certificates": pki.authority.certificate}
    signed, foreign = pki.client, pki.other_client
    assert predict_code(server, **trusting) is grpc.StatusCode.UNAVAILABLE, "no client certificate"
    assert (
        predict_code(server, **trusting, certificate_chain=foreign.certificate, private_key=foreign.private_key)
        is grpc.StatusCode.UNAVAILABLE
    ), "a client certificate from another CA"
    assert (
        predict_code(server, **trusting, certificate_chain=signed.certificate, private_key=signed.private_key) is None
    )


def test_rotated_certificates_serve_new_connections_without_a_restart(serve, pki: Pki, tmp_path: Path) -> None:
    """The server certificate and the client CA are replaced on disk by ones from a new CA: a new connection that
    trusts only the new CA, with a client certificate the new CA signed, gets through; the old ones no longer do."""
    server = serve(*tls_flags(tmp_path, pki.authority.server(), client_ca=pki.authority.certificate))
    old = {
        "root_certificates": pki.authority.certificate,
        "certificate_chain": pki.client.certificate,
        "private_key": pki.client.private_key,
    }
    new = {
        "root_certificates": pki.other_authority.certificate,
        "certificate_chain": pki.other_client.certificate,
        "private_key": pki.other_client.private_key,
    }
    assert predict_code(server, **old) is None
    assert predict_code(server, **new) is grpc.StatusCode.UNAVAILABLE

    tls_flags(tmp_path, pki.other_authority.server(), client_ca=pki.other_authority.certificate)

    assert predict_code(server, **new) is None
    assert predict_code(server, **old) is grpc.StatusCode.UNAVAILABLE
    assert server.process.poll() is None
    assert any("TLS certificates reloaded" in line for line in server.output)


def test_a_key_that_does_not_match_the_certificate_stops_the_start(pki: Pki, repository: Path, tmp_path: Path) -> None:
    certificate, _ = pki.authority.server().write(tmp_path, "server")
    _, other_key = pki.authority.server().write(tmp_path, "other")
    with pytest.raises(RuntimeError, match=r"KEY_VALUES_MISMATCH|key values mismatch"):
        start_server(repository, "--tls-cert", str(certificate), "--tls-key", str(other_key))


# ---- bearer tokens ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenServer:
    server: RunningServer
    tokens_file: Path
    caller: str
    admin: str
    environment_caller: str


@pytest.fixture(scope="module")
def token_server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    caller, admin, environment_caller = new_token(), new_token(), new_token()
    tokens_file = tmp_path_factory.mktemp("auth") / "tokens"
    tokens_file.write_text(f"# role token\ncaller {caller}\n\nadmin {admin}\n")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("ONNXPLAIN_CALLER_TOKENS", f"{new_token()}, {environment_caller}")
        server = start_server(repository, "--tokens-file", str(tokens_file), "--log-level", "DEBUG")
    yield TokenServer(server, tokens_file, caller, admin, environment_caller)
    server.stop()


def call_code(server: RunningServer, call: Callable[[Client], object], token: str | None) -> grpc.StatusCode | None:
    with Client(server.target, timeout=CONNECT_TIMEOUT, token=token) as client:
        try:
            call(client)
        except OnnxplainError as error:
            assert token is None or token not in error.message
            return error.code
    return None


def predict(client: Client) -> None:
    np.testing.assert_allclose(client.predict(MODEL, IMAGE).scores, EXPECTED_SCORES, rtol=1e-6)


CALLER_CALLS = {
    "predict": predict,
    "explain": lambda client: client.explain(MODEL, IMAGE, method="saliency"),
    "models": lambda client: client.models(),
    "methods": lambda client: client.methods(),
    "metadata": lambda client: client.metadata(MODEL),
}
ADMIN_CALLS = {
    "load": lambda client: client.load(MODEL),
    "reload": lambda client: client.reload(MODEL),
}


@pytest.mark.parametrize("call", [*CALLER_CALLS.values(), *ADMIN_CALLS.values()], ids=[*CALLER_CALLS, *ADMIN_CALLS])
def test_calls_without_a_valid_token_are_unauthenticated(token_server: TokenServer, call) -> None:
    server = token_server.server
    assert call_code(server, call, None) is grpc.StatusCode.UNAUTHENTICATED
    assert call_code(server, call, new_token()) is grpc.StatusCode.UNAUTHENTICATED
    # A prefix of a real token is not that token.
    assert call_code(server, call, token_server.admin[:-1]) is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("call", CALLER_CALLS.values(), ids=CALLER_CALLS)
def test_callers_and_admins_may_predict_explain_and_read_metadata(token_server: TokenServer, call) -> None:
    for token in (token_server.caller, token_server.environment_caller, token_server.admin):
        assert call_code(token_server.server, call, token) is None


@pytest.mark.parametrize("call", ADMIN_CALLS.values(), ids=ADMIN_CALLS)
def test_only_admins_may_manage_models(token_server: TokenServer, call) -> None:
    server = token_server.server
    assert call_code(server, call, token_server.caller) is grpc.StatusCode.PERMISSION_DENIED
    assert call_code(server, call, token_server.environment_caller) is grpc.StatusCode.PERMISSION_DENIED
    assert call_code(server, call, token_server.admin) is None


def test_the_token_can_be_any_case_of_bearer_and_is_sent_by_the_async_client(token_server: TokenServer) -> None:
    async def scores(token: str | None) -> np.ndarray | grpc.StatusCode:
        async with AsyncClient(token_server.server.target, timeout=CONNECT_TIMEOUT, token=token) as client:
            try:
                return (await client.predict(MODEL, IMAGE)).scores
            except OnnxplainError as error:
                return error.code

    np.testing.assert_allclose(asyncio.run(scores(token_server.caller)), EXPECTED_SCORES, rtol=1e-6)
    assert asyncio.run(scores(None)) is grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(token_server.server.target) as channel:
        list_models = channel.unary_unary("/onnxplain.v1.ExplainService/ListModels")
        list_models(b"", metadata=[("authorization", f"bEaReR {token_server.caller}")], timeout=CONNECT_TIMEOUT)
        with pytest.raises(grpc.RpcError) as refused:
            list_models(b"", metadata=[("authorization", f"Basic {token_server.caller}")], timeout=CONNECT_TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection_stay_open_for_probes(token_server: TokenServer) -> None:
    with grpc.insecure_channel(token_server.server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CONNECT_TIMEOUT)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([request]), timeout=CONNECT_TIMEOUT
        )
        services = {service.name for response in responses for service in response.list_services_response.service}
    assert "onnxplain.v1.ExplainService" in services


def test_the_cli_reads_the_token_from_the_environment(token_server: TokenServer, monkeypatch) -> None:
    target = token_server.server.target
    refused = run_cli("models", "--server", target)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr
    monkeypatch.setenv("ONNXPLAIN_TOKEN", token_server.caller)
    listed = run_cli("models", "--server", target)
    assert listed.returncode == 0, listed.stderr
    assert MODEL in listed.stdout
    denied = run_cli("load", "--server", target, "--model", MODEL)
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    loaded = run_cli("load", "--server", target, "--model", MODEL, "--token", token_server.admin)
    assert loaded.returncode == 0, loaded.stderr


def test_the_tokens_file_is_reread_when_it_changes(token_server: TokenServer) -> None:
    """A new caller token works and the revoked one is refused, without a restart; the admin token stays."""
    original = token_server.tokens_file.read_text()
    added = new_token()
    try:
        replace_file(token_server.tokens_file, f"caller {added}\nadmin {token_server.admin}\n")
        assert call_code(token_server.server, predict, added) is None
        assert call_code(token_server.server, predict, token_server.caller) is grpc.StatusCode.UNAUTHENTICATED
        # A broken file keeps the tokens that were in force.
        replace_file(token_server.tokens_file, f"{added} caller\n")
        assert call_code(token_server.server, predict, added) is None
    finally:
        replace_file(token_server.tokens_file, original)
    assert call_code(token_server.server, predict, token_server.caller) is None


def replace_file(path: Path, text: str) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(text)
    staging.replace(path)


def test_tokens_never_appear_in_the_server_output(repository: Path, tmp_path: Path) -> None:
    """Calls with good, wrong and malformed tokens, at DEBUG level, then a tokens file the server refuses to start
    with: no token shows anywhere in what the server printed."""
    caller, admin = new_token(), new_token()
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"caller {caller}\nadmin {admin}\n")
    server = start_server(repository, "--tokens-file", str(tokens_file), "--log-level", "DEBUG")
    wrong = [new_token(), caller[:-1], f"{admin}x"]
    try:
        for token in [caller, admin, *wrong]:
            for call in (predict, ADMIN_CALLS["load"]):
                call_code(server, call, token)
        replace_file(tokens_file, f"{admin} admin\n")  # role and token swapped: refused, the old tokens stay
        call_code(server, predict, caller)
    finally:
        server.stop()
    output = "".join(server.output)
    assert "refused" in output and "keeping the previous tokens" in output, output
    assert not [token for token in [caller, admin, *wrong] if token in output]

    with pytest.raises(RuntimeError) as failed:
        start_server(repository, "--tokens-file", str(tokens_file))
    assert "line 1" in str(failed.value)
    assert admin not in str(failed.value)


# ---- request size ---------------------------------------------------------------------------------------------------


def test_requests_over_the_message_limit_are_refused(serve) -> None:
    server = serve("--max-message-bytes", "4096")
    assert predict_code(server) is None
    with Client(server.target, timeout=CONNECT_TIMEOUT) as client, pytest.raises(OnnxplainError) as refused:
        client.predict(MODEL, np.zeros((1, 4, 2048), np.float32))
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED


# ---- the policy and the token file format, without a server ----------------------------------------------------------


def test_every_rpc_needs_the_role_the_policy_names() -> None:
    methods = explain_service_pb2.DESCRIPTOR.services_by_name["ExplainService"].methods
    roles = {method.name: required_role(f"/onnxplain.v1.ExplainService/{method.name}") for method in methods}
    admin_only = {"LoadModel", "UnloadModel", "ReloadModel"}
    assert {name for name, role in roles.items() if role == "admin"} == admin_only
    assert {name for name, role in roles.items() if role == "caller"} == set(roles) - admin_only
    # Fail closed: a method nobody classified is an admin's.
    assert required_role("/onnxplain.v1.ExplainService/DropEverything") == "admin"
    assert required_role("/some.Other/Thing") == "admin"
    assert required_role("/inference.GRPCInferenceService/ModelInfer") == "caller"
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{token}", "line 1: expected '<role> <token>'"),
        ("caller {token} extra", "line 1: expected '<role> <token>'"),
        ("\n# comment\n{token} caller", "line 3: the role must be one of caller, admin"),
        ("root {token}", "line 1: the role must be one of caller, admin"),
        ("admin short", "line 1: a token must be at least 16 visible ASCII characters"),
    ],
)
def test_a_bad_tokens_file_is_refused_without_quoting_it(text: str, message: str) -> None:
    token = new_token()
    with pytest.raises(ConfigurationError) as refused:
        parse_tokens(text.format(token=token), "tokens")
    assert message in str(refused.value)
    assert token not in str(refused.value)


def test_tokens_from_the_environment_and_the_strongest_role_wins(tmp_path: Path) -> None:
    both, caller, admin = new_token(), new_token(), new_token()
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"caller {both}\ncaller {caller}\n")
    store = TokenStore(tokens_file, {"ONNXPLAIN_ADMIN_TOKENS": f" {admin} ,,{both}"})
    assert (store.role_of(both), store.role_of(caller), store.role_of(admin)) == ("admin", "caller", "admin")
    assert store.role_of(None) is None and store.role_of(caller + caller) is None
    assert not TokenStore(None, {}).enabled
    with pytest.raises(ConfigurationError, match="ONNXPLAIN_CALLER_TOKENS entry 2"):
        TokenStore(None, {"ONNXPLAIN_CALLER_TOKENS": f"{caller},tiny"})
