"""The workloads of `tofu bench`, the implementations and transports they run on."""

from __future__ import annotations

from dataclasses import dataclass

IMPLS = ("tofu", "pyzmq", "floor")
TRANSPORTS = ("tcp", "uds", "tls")
# tls is TLS on loopback TCP: tofu, and the floor's blocking loops over an
# ssl.SSLSocket for the one-connection workloads (TLS_FLOOR_KINDS); pyzmq has
# no TLS, so it does not run on it (its tls figures read "n/a").
TLS_IMPLS = ("tofu", "floor")
TLS_FLOOR_KINDS = ("oneway", "rtt", "pipeline")


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # oneway | rtt | pipeline | fanin | idle
    size: int  # body bytes
    count: int  # measured messages (full run)
    quick_count: int
    warmup: int
    quick_warmup: int
    title: str
    procs: int = 1  # server processes sharing the port (and client processes sending to it)
    face: str = ""  # the client goes through the service layer: "client" (tofu.Client), "aclient" (tofu.aio.Client)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("oneway-64", "oneway", 64, 200_000, 20_000, 20_000, 2_000, "one-way 64 B"),
        Workload("oneway-1k", "oneway", 1024, 100_000, 10_000, 10_000, 1_000, "one-way 1 KiB"),
        Workload("oneway-64k", "oneway", 65535, 12_000, 600, 1_000, 60, "one-way 65535 B"),
        Workload("rtt", "rtt", 64, 10_000, 1_000, 1_000, 200, "round trip 64 B, 1 outstanding"),
        Workload("pipeline", "pipeline", 64, 100_000, 5_000, 10_000, 500, "request/response 64 B, 64 outstanding"),
        Workload(
            "pipeline-client",
            "pipeline",
            64,
            100_000,
            5_000,
            10_000,
            500,
            "request/response through tofu.Client.request, 64 threads",
            face="client",
        ),
        Workload(
            "pipeline-aclient",
            "pipeline",
            64,
            100_000,
            5_000,
            10_000,
            500,
            "request/response through tofu.aio.Client.request, 64 tasks",
            face="aclient",
        ),
        Workload("fanin", "fanin", 64, 200_000, 20_000, 20_000, 2_000, "fan-in 64 B"),
        Workload("fanin-2", "fanin", 64, 200_000, 20_000, 20_000, 2_000, "fan-in 64 B, 2 server processes", 2),
        Workload("fanin-4", "fanin", 64, 200_000, 20_000, 20_000, 2_000, "fan-in 64 B, 4 server processes", 4),
        Workload("idle", "idle", 64, 50_000, 5_000, 5_000, 1_000, "idle connections + one active"),
    )
}

# Throughput workloads run this many times more messages for the faster
# implementations, so that every measured window lasts about as long (about a
# second in a full run). Round trips (rtt) use the same count for all.
IMPL_SCALE = {"tofu": 1, "pyzmq": 4, "floor": 10}
SCALED_KINDS = ("oneway", "pipeline", "fanin", "idle")

# Workloads with several server processes run tofu only, over TCP only: the
# servers share one port with SO_REUSEPORT (tofu.TCPServerAddress(...,
# reuse_port=True)). A Unix socket path cannot be shared; pyzmq's PULL socket
# has no way to share a port between processes; the floor has no such variant.
MULTI_PROC_IMPLS = ("tofu",)
MULTI_PROC_TRANSPORTS = ("tcp",)

# Workloads through the service layer (Workload.face) run tofu only: the same
# echo server as `pipeline` (FACE_BASE), with a client that calls Client.request.
# Each of their runs comes right after the matching run of FACE_BASE, so that a
# machine whose load drifts during the bench skews the ratio as little as it can.
FACE_IMPLS = ("tofu",)
FACE_BASE = "pipeline"
