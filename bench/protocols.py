"""gRPC beside HTTP: the same /v2 inference over both, at 1, 8 and 16 clients.

``python bench/protocols.py [--duration-s 8] [--clients 1,8,16] [--payload pixels,jpeg]``

Starts Gunicorn (2 workers x 8 threads, the private model server with the tiny model,
GRPC_PORT set) on 127.0.0.1, then for each payload and client count runs HTTP
(tritonclient.http, binary tensors) and gRPC (tritonclient.grpc, raw contents) one after
the other, each client in its own process (one connection each), for a fixed time.
Transports alternate at every step, so a busy machine slows both alike: compare ratios.
Writes bench/results/protocols.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MODEL = "tiny"
SIZE = 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _photo_jpeg() -> bytes:
    import cv2  # noqa: PLC0415
    import skimage.data  # noqa: PLC0415

    rgb = np.ascontiguousarray(skimage.data.coffee()[..., :3])
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


def _client_loop(  # noqa: PLR0917 (a Process target takes positional arguments)
    transport: str, target: str, payload: str, duration_s: float, barrier: Any, results: Any
) -> None:
    """One client: connect, wait for the others, infer back to back for duration_s."""
    if transport == "http":
        import tritonclient.http as client_module  # noqa: PLC0415

        client: Any = client_module.InferenceServerClient(target, network_timeout=60.0)
    else:
        import tritonclient.grpc as client_module  # type: ignore[no-redef]  # noqa: PLC0415

        client = client_module.InferenceServerClient(target)
    if payload == "pixels":
        tensor = client_module.InferInput("image", [1, SIZE, SIZE, 3], "UINT8")
        data: np.ndarray = np.random.default_rng(1).integers(
            0, 255, (1, SIZE, SIZE, 3), dtype=np.uint8
        )
    else:
        tensor = client_module.InferInput("image_bytes", [1], "BYTES")
        data = np.array([_photo_jpeg()], dtype=object)
    if transport == "http":
        tensor.set_data_from_numpy(data, binary_data=True)
        outputs = [client_module.InferRequestedOutput("probabilities", binary_data=True)]
    else:
        tensor.set_data_from_numpy(data)
        outputs = [client_module.InferRequestedOutput("probabilities")]
    client.infer(MODEL, [tensor], outputs=outputs)  # warm the connection
    barrier.wait(300)  # every client connected and warm: start together
    latencies = []
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        began = time.perf_counter()
        client.infer(MODEL, [tensor], outputs=outputs)
        latencies.append(time.perf_counter() - began)
    client.close()
    results.put(latencies)


def run_load(
    transport: str, target: str, payload: str, clients: int, duration_s: float
) -> dict[str, Any]:
    """Run `clients` client processes at once; return throughput and latency figures."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(clients)
    queue = context.Queue()
    processes = [
        context.Process(
            target=_client_loop, args=(transport, target, payload, duration_s, barrier, queue)
        )
        for _ in range(clients)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(60)
    latencies = np.array([value for result in results for value in result])
    return {
        "transport": transport,
        "payload": payload,
        "clients": clients,
        "requests": int(latencies.size),
        "throughput_rps": round(latencies.size / duration_s, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
    }


def _wait_ready(url: str, grpc_target: str, timeout_s: float) -> None:
    import requests  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"not ready after {timeout_s} s ({url}, gRPC {grpc_target})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--clients", default="1,8,16")
    parser.add_argument("--payload", default="pixels,jpeg")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "protocols.json")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="onemodel-protocols-"))
    model = directory / "tiny.keras"
    subprocess.run([sys.executable, str(BENCH / "make_tiny_model.py"), str(model)], check=True)
    port, grpc_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "MODEL_PATH": str(model),
        "GRPC_PORT": str(grpc_port),
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "8",
        "ACCESS_LOG": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = (directory / "gunicorn.log").open("wb")
    gunicorn = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")),
            *("--bind", f"127.0.0.1:{port}", "wsgi:app"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rows = []
    try:
        _wait_ready(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", 180)
        targets = {"http": f"127.0.0.1:{port}", "grpc": f"127.0.0.1:{grpc_port}"}
        for payload in args.payload.split(","):
            for clients in (int(value) for value in args.clients.split(",")):
                order = ("http", "grpc") if clients % 2 else ("grpc", "http")
                for transport in order:
                    row = run_load(transport, targets[transport], payload, clients, args.duration_s)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    finally:
        gunicorn.terminate()
        gunicorn.wait(90)
        log.close()
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(
        json.dumps({"duration_s": args.duration_s, "cpus": os.cpu_count(), "rows": rows}, indent=2)
        + "\n"
    )
    columns = ("payload", "clients", "HTTP req/s", "gRPC req/s", "gRPC/HTTP")
    columns += ("HTTP p50/p99 ms", "gRPC p50/p99 ms")
    print("\n| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    by_key = {(row["payload"], row["clients"], row["transport"]): row for row in rows}
    for payload in args.payload.split(","):
        for clients in (int(value) for value in args.clients.split(",")):
            http, grpc = by_key[(payload, clients, "http")], by_key[(payload, clients, "grpc")]
            ratio = grpc["throughput_rps"] / max(http["throughput_rps"], 1e-9)
            print(
                f"| {payload} | {clients} | {http['throughput_rps']} | {grpc['throughput_rps']} "
                f"| {ratio:.2f} | {http['p50_ms']}/{http['p99_ms']} "
                f"| {grpc['p50_ms']}/{grpc['p99_ms']} |"
            )


if __name__ == "__main__":
    main()
