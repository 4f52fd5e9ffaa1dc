"""A Ray cluster of several nodes on one machine: each node a `ray start` of its own on 127.0.0.1, with its own temp
dir and ports, one CPU and no dashboard. The Ray benchmark (`run.py ray`) and the tests of studies on Ray start
their clusters with it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")

# Without RAY_AUTH_MODE, Ray turns token authentication on when ~/.ray/auth_token exists: the nodes and the
# driver must not depend on what a user's home holds.
UNAUTHENTICATED = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

PORTS = ("node-manager", "object-manager", "metrics-export", "runtime-env-agent", "dashboard-agent-listen",
         "dashboard-agent-grpc")  # fmt: skip


@dataclass
class Node:
    """One `ray start` on this machine, with its own temp dir and ports."""

    temp_dir: Path
    args: list[str]
    name: str  # head, node2, node3, ...
    node_id: str = ""

    def pids(self) -> list[int]:
        """This node's processes: those whose command line names its temp dir, and their children (its agents and
        workers do not name it; the workers lead process groups of their own)."""
        parents, named = {}, []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                try:
                    state, parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                    if state == "Z":
                        continue  # ended, not yet reaped by its new parent
                    parents[int(proc.name)] = int(parent)
                    if str(self.temp_dir).encode() in (proc / "cmdline").read_bytes():
                        named.append(int(proc.name))
                except (OSError, IndexError, ValueError):
                    continue  # ended meanwhile
        found, todo = set(named), list(named)
        while todo:
            pid = todo.pop()
            children = [child for child, parent in parents.items() if parent == pid and child not in found]
            found.update(children)
            todo.extend(children)
        return sorted(found)

    def raylets(self) -> list[int]:
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    found.append(pid)
        return found

    def stop(self) -> None:
        """`ray stop` for this node alone (`ray stop` itself ends every Ray process of the machine)."""
        for sig, wait in ((signal.SIGTERM, 2), (signal.SIGKILL, 10)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)


def free_port() -> int:
    """A port free on every address: Ray binds some of its ports on the machine's own address, not on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # A lost node is declared dead after 3 missed one-second health checks (the default waits about 30 s)
    return env | UNAUTHENTICATED | {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                                    "RAY_health_check_initial_delay_ms": "1000"}  # fmt: skip


def start_node(node: Node) -> None:
    done = subprocess.run([RAY, "start", *node.args], env=ray_env(), capture_output=True, text=True, timeout=120,
                          start_new_session=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"`ray start` failed:\n{done.stdout}{done.stderr}")


def new_node(name: str, head_address: str | None) -> Node:
    """A head (no address) or a node that joins it: one CPU, a small object store, no dashboard, ports of its own.
    Ray reports the machine's own address for 127.0.0.1 (it does not advertise loopback)."""
    temp_dir = Path(tempfile.mkdtemp(prefix=f"ray{name}", dir="/tmp"))  # Ray's socket paths must stay short
    ports = [f"--{option}-port={free_port()}" for option in PORTS]
    if head_address:
        where = ["--address", head_address]
    else:
        where = ["--head", f"--port={free_port()}", f"--ray-client-server-port={free_port()}",
                 f"--dashboard-port={free_port()}", "--include-dashboard=false"]  # fmt: skip
    args = [*where, "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}",
            f"--object-store-memory={200 * 2**20}", "--disable-usage-stats", *ports]  # fmt: skip
    return Node(temp_dir, args, name)


def option(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


@dataclass
class LoopbackCluster:
    """A head on 127.0.0.1 and the nodes joined to it."""

    address: str
    nodes: list[Node]

    def add(self) -> Node:
        """Start one more node and join it to the head."""
        node = new_node(f"node{len(self.nodes) + 1}", self.address)
        self.nodes.append(node)  # before it starts: a half-started node is stopped too
        start_node(node)
        return node


@contextlib.contextmanager
def loopback_cluster(count: int) -> Iterator[LoopbackCluster]:
    """A head and `count - 1` nodes joined to it on 127.0.0.1; each node, those added later included, stopped (and
    its temp dir removed) at the end, whatever happens."""
    head = new_node("head", None)
    cluster = LoopbackCluster(f"127.0.0.1:{option(head.args, 'port')}", [head])
    try:
        start_node(head)
        for _ in range(1, count):
            cluster.add()
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.stop()
            shutil.rmtree(node.temp_dir, ignore_errors=True)


def node_ids(address: str, nodes: tuple[Node, ...] | list[Node]) -> str:
    """Each node's Ray id (told apart by node manager port: both report this machine's address); the id of the
    node a driver on this machine connects to. Needs UNAUTHENTICATED in this process's environment."""
    import ray

    ray.init(address=address, logging_level="WARNING")
    try:
        alive = [n for n in ray.nodes() if n["Alive"]]
        if len(alive) != len(nodes) or len({n["NodeManagerAddress"] for n in alive}) != 1:  # one machine
            raise RuntimeError(f"expected {len(nodes)} live nodes on one machine, Ray lists {alive}")
        by_port = {str(n["NodeManagerPort"]): n["NodeID"] for n in alive}
        for node in nodes:
            node.node_id = by_port[option(node.args, "node-manager-port")]
        return ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()


@contextlib.contextmanager
def driver_env(address: str) -> Iterator[None]:
    """This process as a driver of the cluster at `address` (RAY_ADDRESS, no authentication) until the block ends."""
    changed = UNAUTHENTICATED | {"RAY_ADDRESS": address}
    before = {name: os.environ.get(name) for name in changed}
    os.environ.update(changed)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
