"""Kafka security of the system: one principal per job role, what each may do (ACLs), their credentials.

Roles (README, "Security"):

- `operator`: the control plane and the CLI: creates, alters and reads every topic and group; writes only
  `schedules`, `lifecycle` and the `models` registry (not a super user: it cannot write answers).
- `external_state`: reads `requests`, writes `requests.augmented` and `requests.quarantine`.
- `model`: every model job: reads `requests.augmented`, writes `scores`.
- `rendezvous`: reads `requests.augmented`, `scores`, `schedules` and `answers` (its recovery scan); the
  only role that writes `answers` and the gateways' reply topics (`answers.*`, by prefix); also writes
  `scores.late` and `requests.quarantine`.
- `quality`: reads `requests`, writes `quality` only (on a secured broker its alerts stay in `quality`,
  `rendezvous quality watch` shows them; they do not go to `lifecycle`, which only the operators write).
- `client`: the load generator, clients and gateways: writes `requests` and `labels`, reads `answers` and
  `schedules` (a gateway's default budget), creates and reads its reply topics (`answers.*`, by prefix).

Topics are granted by their literal names (a deployment's `TopicNames`: the defaults, or suffixed ones);
consumer groups by prefix (`GROUP_PREFIXES`; a job's group id must start with its role's prefix).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from jobs.common.security import read_properties, write_properties
from schemas.topics import TopicNames, shadow_topic

ROLES = ("operator", "external_state", "model", "rendezvous", "quality", "client")
BROKER = "broker"
"""The embedded broker's own principal (inter-broker and controller traffic, SASL PLAIN); a super user."""

MECHANISM = "SCRAM-SHA-512"

GROUP_PREFIXES = {
    "external_state": "external-state",
    "model": "model-",
    "rendezvous": "rendezvous",
    "quality": "quality",
    "client": "load-",
}
"""Consumer group id prefix of each role (the jobs' default group ids, the load generator's collector)."""


def user_of(role: str) -> str:
    return role.replace("_", "-")


def principal(role: str) -> str:
    return f"User:{user_of(role)}"


@dataclass(frozen=True)
class Grant:
    """ALLOW `principal` `operation` on a resource."""

    principal: str
    operation: str  # READ | WRITE
    resource: str  # TOPIC | GROUP
    name: str
    pattern: str = "LITERAL"  # LITERAL | PREFIXED


def grants(topics: TopicNames = TopicNames(), group_prefixes: dict[str, str] | None = None) -> list[Grant]:
    """The ACLs of every role for the topics `topics` names. The operators' principal may create, alter and read
    every topic and group but writes only `schedules`, `lifecycle`, `models` and `transitions`, and the transition
    tokens of a hand-over into `requests` and `requests.augmented` (control/ops/handover.py): no super user but the
    broker's own, so only the rendezvous can write answers."""
    t = topics
    reads = {
        "external_state": [t.requests, t.transitions],
        "model": [t.augmented],
        "rendezvous": [t.augmented, t.scores, t.schedules, t.answers, t.transitions],
        "quality": [t.requests],
        "client": [t.answers, t.schedules],
    }
    writes = {
        # and each one's shadow output: a new version's, during a hand-over (control/ops/handover.py)
        "external_state": [t.augmented, t.quarantine, shadow_topic(t.augmented)],
        "model": [t.scores],
        "rendezvous": [t.answers, t.late, t.quarantine, shadow_topic(t.answers)],
        "quality": [t.quality],
        "client": [t.requests, t.labels],
    }
    groups = {**GROUP_PREFIXES, **(group_prefixes or {})}
    op = principal("operator")  # the control plane: sees everything, manages topics, writes only its own
    out: list[Grant] = [Grant(op, o, "CLUSTER", "kafka-cluster") for o in ("CREATE", "DESCRIBE", "DESCRIBE_CONFIGS")]
    out += [Grant(op, o, "TOPIC", "*") for o in ("READ", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "ALTER",
                                                 "CREATE", "DELETE")]
    out += [Grant(op, "WRITE", "TOPIC", name) for name in (t.schedules, t.lifecycle, t.registry, t.transitions,
                                                           t.requests, t.augmented)]
    out += [Grant(op, o, "GROUP", "*") for o in ("READ", "DESCRIBE", "DELETE")]
    for role in reads:
        p = principal(role)
        out += [Grant(p, "READ", "TOPIC", name) for name in reads[role]]
        out += [Grant(p, "WRITE", "TOPIC", name) for name in writes[role]]
        out.append(Grant(p, "READ", "GROUP", groups[role], "PREFIXED"))
    # return addresses (gateway/, jobs/rendezvous/replies.py): a gateway makes and reads `<answers>.<its id>`,
    # only the rendezvous writes there
    replies = f"{t.answers}."
    out += [Grant(principal("client"), o, "TOPIC", replies, "PREFIXED") for o in ("CREATE", "READ")]
    out.append(Grant(principal("rendezvous"), "WRITE", "TOPIC", replies, "PREFIXED"))
    return out


def to_acls(gs: list[Grant]) -> list:
    """kafka-python ACL objects of the grants (from any host)."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return [ACL(g.principal, "*", ACLOperation[g.operation], ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType[g.resource], g.name, ACLResourcePatternType[g.pattern])) for g in gs]


def create_acls(admin, gs: list[Grant]) -> None:
    """Create the grants' ACLs (creating one that exists is a no-op); raises if the broker refused any."""
    result = admin.create_acls(to_acls(gs))
    if result["failed"]:
        raise RuntimeError(f"the broker refused {len(result['failed'])} ACLs: {result['failed'][0]}")


def create_users(admin, credentials_dir: Path, roles: tuple[str, ...] = ROLES) -> None:
    """Create (or update) each role's SCRAM credential with the password in its file."""
    from kafka.admin import UserScramCredentialUpsertion

    ups = []
    for role in roles:
        props = read_properties(credentials_dir / f"{role}.properties")
        ups.append(UserScramCredentialUpsertion(props["username"], props.get("sasl.mechanism", MECHANISM),
                                                props["password"]))
    errors = {u: e for u, e in admin.alter_user_scram_credentials(ups).items() if e}
    if errors:
        raise RuntimeError(f"could not create the SCRAM users {sorted(errors)}: {next(iter(errors.values()))}")


def ensure_credentials(credentials_dir: Path) -> list[str]:
    """Write a random password for each role and the broker whose file is missing (mode 0600, directory
    0700); returns the roles whose files were created. Existing files (e.g. the user's own) are kept."""
    credentials_dir.mkdir(parents=True, exist_ok=True)
    credentials_dir.chmod(0o700)
    made = []
    for role in (*ROLES, BROKER):
        path = credentials_dir / f"{role}.properties"
        if path.exists():
            continue
        mechanism = "PLAIN" if role == BROKER else MECHANISM
        write_properties(path, {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
                                "username": user_of(role), "password": secrets.token_urlsafe(24)})
        made.append(role)
    return made
