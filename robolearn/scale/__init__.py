"""Scaling out on Ray: grids of runs (`robolearn sweep`), evaluation split across workers
(`robolearn eval backend=ray workers=N`) and SAC with remote actors (`robolearn finetune actors=N`).

Ray is optional (`pip install -c constraints.txt -e ".[ray]"`, in the dev extra); everything else in robolearn
runs without it. `connect()` starts a local Ray instance sized to this machine, or joins a cluster
(`address=auto` on a cluster node, `address=ray://head:10001` through Ray Client); an address that cannot be
reached is a UserError (a message, no traceback).

Layering: this package sits beside algos/eval (eval and finetune import it); the sweep runs the commands by
name (robolearn.scale.sweep.RUNNERS), so app-level code (the loop) is loaded in the Ray worker, not imported
here.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

from robolearn.errors import UserError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -c constraints.txt -e ".[ray]"   (ray==2.60.0)'


def import_ray():
    """`ray`, or a UserError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise UserError(f"Ray is not installed ({e}). Fix: {INSTALL_HINT}") from None
    return ray


def _reachable(address: str, timeout: float = 3.0) -> str | None:
    """None when host:port of `address` accepts a TCP connection, else why not (checked before ray.init, which
    can retry for a minute against an address with nothing behind it)."""
    u = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = u.hostname, u.port or (10001 if u.scheme == "ray" else 6379)
    if not host:
        return f"address={address!r} has no host (expected auto, host:port or ray://host:port)"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"nothing answers at {host}:{port} ({e.strerror or e})"
    return None


def connect(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = False):
    """Make sure this process is connected to Ray; returns (ray, started) with started=True when this call
    started or joined it (the caller then shuts it down).

    address None/"local": a local instance with num_cpus (default: this machine's CPU count); "auto": the
    cluster this node belongs to; "host:port" (GCS) or "ray://host:port" (Ray Client)."""
    ray = import_ray()
    remote = address not in (None, "", "local", "auto")
    why = _reachable(address) if remote else None
    if why is not None:
        raise UserError(
            f"cannot reach the Ray cluster at address={address!r}: {why}. Fix: start it (`ray start --head` "
            "on the head node; Ray Client listens on port 10001), check the host and port, or drop address= "
            "to run on a local Ray instance"
        )
    if ray.is_initialized():
        return ray, False
    kw = {"include_dashboard": False, "log_to_driver": log_to_driver, "configure_logging": False}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local instance: no token file in ~/.ray
    if address in (None, "", "local"):
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kw)
        return ray, True
    try:
        ray.init(address=address, **kw)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError... all mean "not there"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot connect to the Ray cluster at address={address!r}: {msg}. Fix: start it (`ray start "
            "--head`), give its address (auto on a cluster node, ray://head:10001 from outside), or drop "
            "address= to run on a local Ray instance"
        ) from None
    return ray, True


def unwrap(e: BaseException) -> BaseException:
    """The user's exception inside a Ray task error (RayTaskError wraps it), else `e`."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


__all__ = ["connect", "import_ray", "unwrap", "UserError", "INSTALL_HINT"]
