"""A stand-in for the ``vllm`` (and ``transformers``) executable in tests:
``fake_vllm.py serve MODEL --host H --port P``.

It serves the SIMULATED model on that port until SIGTERM and logs like vLLM. Other
flags are accepted and ignored. A model named ``fail-early`` exits 1 at once with an error
line; ``never-healthy`` sleeps without serving.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tfgrpo.sim import start_sim_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args, _ignored = parser.parse_known_args()
    print(f"INFO 01-01 00:00:00 api_server.py:1] vLLM API server version 0.0.0-fake, model {args.model}", flush=True)
    if args.model == "fail-early":
        print(f"ERROR: model {args.model} could not be loaded: out of memory (fake)", flush=True)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.model == "never-healthy":
        stop.wait()
        return 0
    server = start_sim_server(seed=0, host=args.host, port=args.port)
    print(f"INFO:     Uvicorn running on http://{args.host}:{args.port} (Press CTRL+C to quit)", flush=True)
    while not stop.wait(0.1):
        pass
    server.stop()
    print("INFO:     Shutting down", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
