"""Kafka client security from one properties file per principal, for every kind of client of the project.

A principal's file is a Java client properties file (`security.protocol`, `sasl.mechanism`, `username`,
`password`, optionally `ssl.*`; `rendezvous up --secure` writes one per job role under run/credentials,
mode 0600). From it come:

- `flink_properties`: the properties of a Flink job's Kafka sources and sinks. Secrets are not copied:
  the JAAS line refers to the file (`${file:PATH:password}`), resolved by Kafka's FileConfigProvider
  (the connector's shaded class) inside the JobManager and TaskManagers when the client is created, so
  no password is in `flink run`'s argv, the job graph or Flink's logs (the file must be readable there).
- `client_config`: kafka-python settings (the control plane, the rendezvous's recovery scan).
- `librdkafka_config`: confluent-kafka settings (the load generator, the benchmark).

Any of these also takes properties given inline (e.g. `sasl.jaas.config` with the password in it), for
brokers whose credentials are handed out that way; those are passed on as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

SHADED = "org.apache.flink.kafka.shaded."
"""Package prefix of Kafka's classes in the flink-sql-connector-kafka jar (relocated by the shade plugin)."""

FILE_PROVIDER = f"{SHADED}org.apache.kafka.common.config.provider.FileConfigProvider"

LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}

SECRET_WORDS = ("password", "jaas", "secret", "key")
"""A property whose name has one of these is a secret (never shown; see `masked`)."""

_REF = re.compile(r"\$\{file:([^}]*?):([^}:]*?)\}")
# keys of a principal's file that are not Kafka client properties
_CREDENTIAL_KEYS = ("username", "password")


def masked(properties: dict[str, str]) -> dict[str, str]:
    """The properties with every secret's value replaced by ***."""
    return {k: ("***" if any(w in k for w in SECRET_WORDS) else v) for k, v in properties.items()}


def read_properties(path: str | Path) -> dict[str, str]:
    """A Java properties file's `key=value` (or `key: value`) lines; `#`/`!` comments, no continuations."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        m = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).replace("\\\\", "\\")
    return out


def write_properties(path: Path, properties: dict[str, str]) -> None:
    """Write a properties file readable only by its owner (created so: the secret is never world-readable)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in properties.items()))
    os.chmod(path, 0o600)


def resolve(properties: dict[str, str]) -> dict[str, str]:
    """The properties with `${file:PATH:KEY}` references replaced by KEY's value in the properties file PATH
    (what Kafka's FileConfigProvider does in a Java client)."""
    files: dict[str, dict[str, str]] = {}

    def value(m: re.Match) -> str:
        path, key = m.group(1), m.group(2)
        if path not in files:
            files[path] = read_properties(path)
        return files[path].get(key, "")

    return {k: _REF.sub(value, v) for k, v in properties.items()}


def jaas_line(mechanism: str, username: str, password: str, shaded: bool = False) -> str:
    module = LOGIN_MODULES.get(mechanism.upper())
    if module is None:
        raise ValueError(f"no login module known for SASL mechanism {mechanism!r} (PLAIN or SCRAM-SHA-256/512)")
    return f'{SHADED if shaded else ""}{module} required username="{username}" password="{password}";'


def flink_properties(path: str | Path) -> dict[str, str]:
    """A Flink job's Kafka client properties from a principal's file: its client properties as they are,
    and a JAAS line (with the connector's shaded login module) whose user name and password are read from
    the file by the FileConfigProvider when the client is created."""
    path = Path(path).resolve()
    props = read_properties(path)
    out = {k: v for k, v in props.items() if k not in _CREDENTIAL_KEYS and k != "sasl.jaas.config"}
    if "password" in props:
        out["sasl.jaas.config"] = jaas_line(props.get("sasl.mechanism", "PLAIN"), f"${{file:{path}:username}}",
                                            f"${{file:{path}:password}}", shaded=True)
    elif "sasl.jaas.config" in props:
        out["sasl.jaas.config"] = f"${{file:{path}:sasl.jaas.config}}"
    for k in [k for k in out if any(w in k for w in ("password", "secret")) and "location" not in k]:
        out[k] = f"${{file:{path}:{k}}}"  # e.g. ssl.truststore.password: referred to, not copied
    if any("${file:" in v for v in out.values()):
        out["config.providers"] = "file"
        out["config.providers.file.class"] = FILE_PROVIDER
    return out


def _credentials(properties: dict[str, str]) -> tuple[str | None, str | None]:
    if "password" in properties:
        return properties.get("username"), properties["password"]
    jaas = properties.get("sasl.jaas.config", "")
    found = [re.search(rf'{k}\s*=\s*"([^"]*)"', jaas) for k in ("username", "password")]
    return tuple(m.group(1) if m else None for m in found)  # type: ignore[return-value]


def client_config(properties: dict[str, str]) -> dict:
    """Kafka client properties (Java names, as a job's Flink sources use them, or a principal's file) as
    kafka-python settings: security protocol, SASL PLAIN/SCRAM credentials (from `username`/`password` or
    the JAAS line, `${file:...}` references resolved), PEM files. Others are not mapped."""
    properties = resolve(properties)
    out: dict = {}
    if "security.protocol" in properties:
        out["security_protocol"] = properties["security.protocol"]
    if "sasl.mechanism" in properties:
        out["sasl_mechanism"] = properties["sasl.mechanism"]
    user, password = _credentials(properties)
    if user is not None:
        out["sasl_plain_username"] = user
    if password is not None:
        out["sasl_plain_password"] = password
    for java, py in (("ssl.ca.location", "ssl_cafile"), ("ssl.certificate.location", "ssl_certfile"),
                     ("ssl.key.location", "ssl_keyfile")):
        if java in properties:
            out[py] = properties[java]
    return out


def librdkafka_config(properties: dict[str, str]) -> dict:
    """The same as confluent-kafka (librdkafka) settings."""
    properties = resolve(properties)
    out: dict = {}
    for k in ("security.protocol", "sasl.mechanism", "ssl.ca.location", "ssl.certificate.location",
              "ssl.key.location"):
        if k in properties:
            out[k] = properties[k]
    user, password = _credentials(properties)
    if user is not None:
        out["sasl.username"] = user
    if password is not None:
        out["sasl.password"] = password
    return out
