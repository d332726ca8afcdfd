"""A single-node Apache Kafka 4.x broker (KRaft) on loopback, without Docker.

Input: ctpipe settings (ports, data dir, optional version pin or KAFKA_HOME). Output: a running
broker process whose pid, version and ports are recorded under ``<data_dir>/kafka``.

The broker jars are resolved from Maven Central with Maven (``deploy/kafka/pom.xml`` +
``dependency:copy-dependencies``) into a git-ignored cache, once; later starts need no network.
If the newest 4.x on Maven Central is incomplete (an artifact of its dependency set missing), the
next older 4.x is tried. ``KAFKA_HOME`` pointing at an unpacked distribution skips Maven.

Every failure is a ``BrokerError`` with a one-line message; nothing here waits without a bound.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J2 = HERE / "log4j2.yaml"
PROPERTIES_TEMPLATE = HERE / "server.properties"

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
MIN_JAVA = 17
MAJOR = 4  # Apache Kafka 4.x
COMPLETE_MARKER = ".complete"
_KAFKA_JAR = re.compile(r"^kafka_2\.13-(\d+\.\d+\.\d+)\.jar$")
# "Could not find artifact org.apache.kafka:X:jar:V" or, when Maven cached the miss,
# "org.apache.kafka:X:jar:V was not found in ...".
_MISSING_ARTIFACT = re.compile(
    r"(?:Could not find artifact )?org\.apache\.kafka:[\w.-]+:(?:jar|pom):(\d+\.\d+\.\d+)"
    r"(?: was not found| in )"
)
_OFFLINE = re.compile(
    r"(Could not transfer|Unknown host|UnknownHost|Network is unreachable|Connection refused|"
    r"Connect timed out|Read timed out|offline mode|Temporary failure in name resolution)",
    re.IGNORECASE,
)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class BrokerError(RuntimeError):
    """The local broker cannot be provided; the message is one line meant for the user."""


@dataclass(frozen=True, slots=True)
class LocalBrokerConfig:
    home: Path  # this broker's state: properties, data, pid, log
    cache_dir: Path  # resolved jars, shared by every broker of this data dir
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    version: str = ""  # exact pin; empty = newest resolvable 4.x
    kafka_home: Path | None = None
    heap: str = "512m"
    start_timeout: float = 60.0

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Distribution:
    version: str
    libs: Path

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    running: bool
    answering: bool
    pid: int | None
    bootstrap: str
    version: str | None
    log_file: Path

    def describe(self) -> str:
        if not self.running:
            return f"stopped (bootstrap {self.bootstrap})"
        state = "running" if self.answering else "starting (not answering yet)"
        return f"{state}: Apache Kafka {self.version or '?'} pid {self.pid} on {self.bootstrap}"


# ---------------------------------------------------------------------------------------------
# prerequisites


def require_java() -> str:
    """Path of a Java >= 17 runtime, or BrokerError."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            f"Java not found on PATH: Apache Kafka {MAJOR}.x needs a Java {MIN_JAVA}+ runtime (install a JDK)"
        )
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"cannot run {java} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise BrokerError(f"cannot read the Java version from {java} -version")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise BrokerError(f"Java {major} found at {java}; Apache Kafka {MAJOR}.x needs Java {MIN_JAVA}+")
    return java


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _libs_version(libs: Path) -> str | None:
    for jar in libs.glob("kafka_2.13-*.jar"):
        match = _KAFKA_JAR.match(jar.name)
        if match:
            return match.group(1)
    return None


# ---------------------------------------------------------------------------------------------
# resolving the broker jars


def cached_distribution(cache_dir: Path, version: str = "") -> Distribution | None:
    """The newest complete cached distribution (or the pinned version), if any."""
    if not cache_dir.is_dir():
        return None
    found: list[Distribution] = []
    for entry in cache_dir.iterdir():
        libs = entry / "libs"
        if not (entry / COMPLETE_MARKER).exists() or not libs.is_dir():
            continue
        v = _libs_version(libs)
        if v and (v == version or (not version and v.startswith(f"{MAJOR}."))):
            found.append(Distribution(v, libs))
    return max(found, key=lambda d: _version_key(d.version), default=None)


def home_distribution(kafka_home: Path) -> Distribution:
    libs = kafka_home / "libs"
    version = _libs_version(libs) if libs.is_dir() else None
    if version is None:
        raise BrokerError(
            f"KAFKA_HOME={kafka_home} is not an unpacked Apache Kafka distribution (no libs/kafka_2.13-*.jar)"
        )
    if _version_key(version)[0] < MAJOR:
        raise BrokerError(f"KAFKA_HOME={kafka_home} holds Apache Kafka {version}; ctpipe needs {MAJOR}.x")
    return Distribution(version, libs)


def fetch_with_maven(cache_dir: Path, version: str = "", log: Log = _quiet) -> Distribution:
    """Resolve the broker jars with Maven into ``cache_dir/<version>/libs``.

    Without a pin, the newest 4.x whose whole runtime dependency set is on Maven Central wins.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) not found on PATH: install Maven, or set KAFKA_HOME to an unpacked Apache Kafka "
            f"{MAJOR}.x distribution"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    upper = f"{MAJOR + 1}.0.0"
    for _ in range(8):
        version_range = f"[{version}]" if version else f"[{MAJOR}.0.0,{upper})"
        staging = cache_dir / f".staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        log(f"resolving org.apache.kafka:kafka_2.13:{version_range} with Maven")
        try:
            proc = subprocess.run(
                [
                    mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(POM), "dependency:copy-dependencies",
                    f"-Dkafka.version.range={version_range}", f"-DoutputDirectory={staging}",
                    "-DincludeScope=runtime",
                ],
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise BrokerError("Maven did not finish resolving the Kafka jars within 15 minutes") from exc
        output = proc.stdout + proc.stderr
        if proc.returncode == 0:
            resolved = _libs_version(staging)
            if resolved is None:
                raise BrokerError(
                    "Maven finished but no kafka_2.13 jar was copied (see deploy/kafka/pom.xml)"
                )
            target = cache_dir / resolved
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            staging.rename(target / "libs")
            (target / COMPLETE_MARKER).write_text(resolved + "\n")
            log(f"Apache Kafka {resolved} resolved into {target}")
            return Distribution(resolved, target / "libs")
        shutil.rmtree(staging, ignore_errors=True)
        missing = _MISSING_ARTIFACT.search(output)
        if missing and not version:
            upper = missing.group(1)
            log(f"Apache Kafka {upper} is incomplete on Maven Central ({missing.group(0)}); trying older 4.x")
            continue
        if _OFFLINE.search(output):
            line = _OFFLINE.search(output)
            raise BrokerError(
                "Maven could not reach Maven Central to resolve the Kafka jars "
                f"({_first_error_line(output, line.group(0) if line else '')}); "
                "go online once, or set KAFKA_HOME to an unpacked Apache Kafka distribution"
            )
        raise BrokerError(f"Maven failed to resolve the Kafka jars: {_first_error_line(output)}")
    raise BrokerError("no complete Apache Kafka 4.x release found on Maven Central")


def _first_error_line(output: str, containing: str = "") -> str:
    for line in output.splitlines():
        if "[ERROR]" in line and containing in line:
            return line.replace("[ERROR]", "").strip()[:300]
    return (output.strip().splitlines() or ["no output"])[-1][:300]


def resolve_distribution(cfg: LocalBrokerConfig, *, refresh: bool = False, log: Log = _quiet) -> Distribution:
    """KAFKA_HOME if set, else the jar cache, else Maven (``refresh`` asks Maven first)."""
    if cfg.kafka_home is not None:
        return home_distribution(cfg.kafka_home)
    cached = cached_distribution(cfg.cache_dir, cfg.version)
    if cached is not None and not refresh:
        return cached
    try:
        return fetch_with_maven(cfg.cache_dir, cfg.version, log)
    except BrokerError as exc:
        if cached is not None:
            log(f"{exc}; using the cached Apache Kafka {cached.version}")
            return cached
        raise


# ---------------------------------------------------------------------------------------------
# processes


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # reap our own exited child (no zombies)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


class LocalBroker:
    """Start, stop and inspect one local broker, identified by its home directory."""

    def __init__(self, cfg: LocalBrokerConfig, log: Log = _quiet) -> None:
        self.cfg = cfg
        self.log = log
        home = cfg.home.resolve()
        self.home = home
        self.pid_file = home / "broker.pid"
        self.state_file = home / "broker.json"
        self.log_file = home / "broker.log"
        self.properties = home / "server.properties"
        self.log_dir = home / "data"
        self.marker = f"-Dctpipe.broker={home}"

    # -- inspection ----------------------------------------------------------------------------
    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        cmdline = _cmdline(pid)
        if cmdline is not None and self.marker not in cmdline:
            return None  # the pid was reused by an unrelated process
        return pid

    def _state(self) -> dict[str, object]:
        try:
            data = json.loads(self.state_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def status(self) -> BrokerStatus:
        pid = self._pid()
        state = self._state()
        host = str(state.get("host", self.cfg.host))
        port = int(str(state.get("port", self.cfg.port))) if pid else self.cfg.port
        return BrokerStatus(
            running=pid is not None,
            answering=pid is not None and tcp_answers(host, port),
            pid=pid,
            bootstrap=f"{host}:{port}" if pid else self.cfg.bootstrap,
            version=str(state["version"]) if pid and "version" in state else None,
            log_file=self.log_file,
        )

    # -- start -----------------------------------------------------------------------------------
    def render_properties(self) -> str:
        template = PROPERTIES_TEMPLATE.read_text()
        return template.format(
            host=self.cfg.host,
            port=self.cfg.port,
            controller_port=self.cfg.controller_port,
            log_dir=self.log_dir,
        )

    def _format_storage(self, java: str, dist: Distribution) -> None:
        if (self.log_dir / "meta.properties").exists():
            return
        shutil.rmtree(self.log_dir, ignore_errors=True)  # a half-formatted directory from a crash
        # Kafka's base64 UUID form; it may start with "-", hence --cluster-id=<id> below.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        proc = subprocess.run(
            [java, "-cp", dist.classpath, f"-Dlog4j2.configurationFile={LOG4J2}", STORAGE_TOOL,
             "format", "--standalone", f"--cluster-id={cluster_id}", "-c", str(self.properties)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise BrokerError(f"formatting KRaft storage in {self.log_dir} failed: {last[:300]}")

    def start(self) -> BrokerStatus:
        """Start the broker and wait until it answers; idempotent when it already runs."""
        current = self.status()
        if current.running:
            if not current.answering:
                self._wait_until_answering(None, current.pid)
            return self.status()
        cfg = self.cfg
        for port in (cfg.port, cfg.controller_port):
            if port_in_use(cfg.host, port):
                raise BrokerError(
                    f"port {port} on {cfg.host} is already in use by another process: "
                    "set CTPIPE_KAFKA_PORT / CTPIPE_KAFKA_CONTROLLER_PORT to free ports"
                )
        java = require_java()
        dist = resolve_distribution(cfg, log=self.log)
        self.home.mkdir(parents=True, exist_ok=True)
        previous = self.properties.read_text() if self.properties.exists() else None
        rendered = self.render_properties()
        if previous is not None and previous != rendered:
            # Ports or paths changed: KRaft's quorum config is in the formatted metadata, so the
            # old log dir cannot be reused. Local broker data is disposable by design.
            shutil.rmtree(self.log_dir, ignore_errors=True)
        self.properties.write_text(rendered)
        self._format_storage(java, dist)
        cmd = [
            java, f"-Xmx{cfg.heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J2}", self.marker,
            "-cp", dist.classpath, MAIN_CLASS, str(self.properties),
        ]  # fmt: skip
        self.log(f"starting Apache Kafka {dist.version} on {cfg.bootstrap} (log: {self.log_file})")
        with self.log_file.open("ab") as log_fh:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, cwd=self.home,
            )  # fmt: skip
        self.pid_file.write_text(f"{proc.pid}\n")
        self.state_file.write_text(
            json.dumps({"pid": proc.pid, "version": dist.version, "host": cfg.host, "port": cfg.port,
                        "controller_port": cfg.controller_port, "libs": str(dist.libs)})
        )  # fmt: skip
        self._wait_until_answering(proc, proc.pid)
        return self.status()

    def _wait_until_answering(self, proc: subprocess.Popen[bytes] | None, pid: int | None) -> None:
        deadline = time.monotonic() + self.cfg.start_timeout
        while time.monotonic() < deadline:
            exited = proc.poll() is not None if proc is not None else (pid is None or not _pid_alive(pid))
            if exited:
                code = proc.returncode if proc is not None else "?"
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"the broker exited (code {code}) while starting: {self._last_error()}")
            if tcp_answers(self.cfg.host, self.cfg.port) and self._metadata_answers():
                return
            time.sleep(0.2)
        if proc is not None:
            _terminate(proc.pid, timeout=10)
            self.pid_file.unlink(missing_ok=True)
        else:
            self.stop()
        raise BrokerError(
            f"the broker did not answer on {self.cfg.bootstrap} within {self.cfg.start_timeout:.0f} s "
            f"(stopped it; see {self.log_file})"
        )

    def _metadata_answers(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.cfg.bootstrap, "log_level": 0})
        try:
            admin.list_topics(timeout=2)
        except Exception:
            return False
        return True

    def _last_error(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "no broker log"
        for line in reversed(lines[-200:]):
            if "ERROR" in line or "Exception" in line:
                return line.strip()[:300]
        return (lines[-1].strip()[:300] if lines else "empty broker log") + f" (see {self.log_file})"

    # -- stop ------------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL of its process group). False if none ran."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self.log(f"stopping the broker (pid {pid})")
        _terminate(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return True


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM the process group, wait up to ``timeout``, then SIGKILL it."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the broker leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
