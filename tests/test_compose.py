"""docker-compose.yml describes a working multi-host deployment of the same jobs (README, "docker-compose").

No Docker engine runs here, so this is `docker compose config`-level validation by hand: the structure, that
everything it builds from or mounts exists (or is made by `make setup`), and that every address and path the
deployed jobs need is provided: the broker by its in-network name, Flink's REST API from the host, the model
artifacts at the path the cards resolve to, MLServer at the URL of the card deployed against it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from control.runtime import mlserver
from schemas.model_card import ModelCard

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = (REPO / "artifacts").resolve()
CARD = REPO / "deploy" / "cards" / "fraud-challenger-mlserver.json"
ENV = {"RENDEZVOUS_ARTIFACTS": str(ARTIFACTS)}
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} on every string of the file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, op, arg = m.groups()
        have = env.get(name)
        if op in (":-", "-"):
            return have if have or (op == "-" and have is not None) else arg
        if op in (":?", "?") and not have:
            raise KeyError(f"{name}: {arg}")
        return have or ""

    return _VAR.sub(sub, value)


def load(env: dict[str, str] = ENV) -> dict:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return interpolate({k: v for k, v in raw.items() if not k.startswith("x-")}, env)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load()


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def flink_properties(svc: dict) -> dict:
    return yaml.safe_load(environment(svc)["FLINK_PROPERTIES"])


def ports(svc: dict) -> list[tuple[str, int, int]]:
    """(host ip, published port, container port)."""
    out = []
    for p in svc.get("ports", []):
        *ip, published, target = str(p).split(":")
        out.append((ip[0] if ip else "0.0.0.0", int(published), int(target)))
    return out


def binds(svc: dict) -> list[tuple[str, str]]:
    out = []
    for v in svc.get("volumes", []):
        source, target, *_ = v.split(":")
        out.append((source, target))
    return out


def test_structure_images_builds_and_dependencies(compose):
    services = compose["services"]
    assert {"kafka", "topics", "jobmanager", "taskmanager", "mlserver"} <= set(services)
    built = set()
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            context = REPO / svc["build"]["context"]
            dockerfile = context / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), (name, dockerfile)
            built.add(svc.get("image"))
            makefile = (REPO / "Makefile").read_text()
            for src in re.findall(r"^COPY\s+(\S+)\s+\S+", dockerfile.read_text(), re.M):
                # in the repository, or made by `make setup` (build/jars/<dir>/... is a Makefile target's output)
                made_by_setup = src.startswith("build/jars/") and f"build/jars/{src.split('/')[2]}/" in makefile
                assert (context / src).exists() or made_by_setup, (name, src)
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps:
            assert dep in services, (name, dep)
    # a service that runs an image another one builds waits for it
    assert services["topics"]["image"] in built and "jobmanager" in services["topics"]["depends_on"]


def test_every_mount_exists_or_is_a_named_volume(compose):
    named = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for source, _target in binds(svc):
            if source.startswith((".", "/")):
                assert (REPO / source).resolve().exists(), (name, source)
            else:
                assert source in named, (name, source)


def test_the_artifact_path_is_required_not_guessed():
    with pytest.raises(KeyError, match="RENDEZVOUS_ARTIFACTS"):
        load({})


def test_published_ports_are_loopback_unless_switched(compose):
    for name, svc in compose["services"].items():
        for ip, _, _ in ports(svc):
            assert ip == "127.0.0.1", (name, ip)
    switched = load({**ENV, "RENDEZVOUS_PUBLISH_HOST": "0.0.0.0", "RENDEZVOUS_PUBLIC_HOST": "node1.example"})
    assert {ip for svc in switched["services"].values() for ip, _, _ in ports(svc)} == {"0.0.0.0"}
    assert "EXTERNAL://node1.example:9092" in environment(switched["services"]["kafka"])["KAFKA_ADVERTISED_LISTENERS"]


def test_kafka_is_reachable_from_the_containers_and_the_host(compose):
    kafka = environment(compose["services"]["kafka"])
    listeners = dict(x.split("://") for x in kafka["KAFKA_LISTENERS"].split(","))
    advertised = dict(x.split("://") for x in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(x.split(":") for x in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols) and set(advertised) <= set(listeners)
    # inside the network: what the jobs get (RENDEZVOUS_JOBS_BOOTSTRAP_SERVERS) and the topics service uses
    assert advertised["PLAINTEXT"] == "kafka:19092" and listeners["PLAINTEXT"].endswith(":19092")
    assert "kafka:19092" in " ".join(compose["services"]["topics"]["entrypoint"])
    # from the host: what the control plane gets (RENDEZVOUS_BOOTSTRAP_SERVERS=localhost:9092)
    assert advertised["EXTERNAL"] == "localhost:9092" and listeners["EXTERNAL"].endswith(":9092")
    assert ("127.0.0.1", 9092, 9092) in ports(compose["services"]["kafka"])
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:" + listeners["CONTROLLER"].rsplit(":", 1)[1]
    # the documented submit path uses exactly these
    header = (REPO / "docker-compose.yml").read_text()
    for setting in ("RENDEZVOUS_FLINK_ADDRESS=localhost:8081", "RENDEZVOUS_BOOTSTRAP_SERVERS=localhost:9092",
                    "RENDEZVOUS_JOBS_BOOTSTRAP_SERVERS=kafka:19092"):
        assert setting in header


def test_flink_cluster_and_submit_path(compose):
    jm, tm = compose["services"]["jobmanager"], compose["services"]["taskmanager"]
    for svc in (jm, tm):
        props = flink_properties(svc)
        assert props["jobmanager.rpc.address"] == "jobmanager"
        assert props["python.executable"] == "/opt/venv/bin/python"  # made by deploy/Dockerfile.flink
        assert "pemja." in props["classloader.parent-first-patterns.additional"]
        for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir"):
            path = props[key].removeprefix("file://")
            assert any(path.startswith(target + "/") for _, target in binds(svc)), (key, path)
    assert "-m venv /opt/venv" in (REPO / "deploy/Dockerfile.flink").read_text()
    assert "0-rendezvous-beam-loopback.jar" in (REPO / "deploy/Dockerfile.flink").read_text()
    # RENDEZVOUS_FLINK_ADDRESS=localhost:8081 from the host (rest.port is Flink's default, 8081)
    assert "rest.port" not in flink_properties(jm) and ("127.0.0.1", 8081, 8081) in ports(jm)
    assert tm["deploy"]["replicas"] >= 2 and "jobmanager" in tm["depends_on"]


def test_model_artifacts_are_at_the_paths_the_cards_resolve_to(compose):
    tm = compose["services"]["taskmanager"]
    mounted = [target for source, target in binds(tm) if source == str(ARTIFACTS)]
    assert mounted == [str(ARTIFACTS)]
    cards = sorted(ARTIFACTS.glob("models/*/*/card.json")) if ARTIFACTS.exists() else []
    if not cards:
        pytest.skip("no trained models (make setup)")
    for path in cards:
        card = ModelCard.load(path)
        if card.artifact:
            assert Path(card.artifact).is_relative_to(mounted[0]) and Path(card.artifact).is_file(), card.key


def test_mlserver_serves_the_card_deployed_against_it(compose):
    svc = compose["services"]["mlserver"]
    env = environment(svc)
    card = ModelCard.load(CARD)
    assert card.runner == "model_udfs.remote:KServeV2Runner"
    assert card.params["url"] == f"http://mlserver:{env['MLSERVER_HTTP_PORT']}"
    assert env["MLSERVER_HOST"] == "0.0.0.0"  # inside its container: the TaskManagers connect over the network
    source, target = binds(svc)[0]
    assert target == "/models" and source == f"{ARTIFACTS}/models" and svc["command"][-1] == "/models"
    assert "requirements-mlserver.lock" in (REPO / "deploy/Dockerfile.mlserver").read_text()
    if not (ARTIFACTS / "models").exists():
        pytest.skip("no trained models (make setup)")
    served = {(m.name, m.version) for m in mlserver.served_models(ARTIFACTS / "models")}
    assert (card.params["model_name"], card.params["model_version"]) in served


def test_no_environment_leaks_into_the_check():
    assert "RENDEZVOUS_PUBLISH_HOST" not in ENV and os.environ.get("RENDEZVOUS_PUBLISH_HOST") in (None, "")
