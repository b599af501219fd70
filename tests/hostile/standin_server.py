"""A stand-in for a server executable that starts a worker process (as vLLM does), for the rows of
issue 23, item 13: ``standin_server.py serve MODEL --host H --port P``.

It answers 200 to any GET (``/health``) and, on SIGTERM, exits at once without stopping its
worker: the worker outlives it unless someone stops the server's whole process group. MODEL says
what it does: ``plain`` starts no worker; ``stubborn-worker``'s worker ignores SIGTERM; ``crash``
exits with status 1 on its own after 1.5 s. The server's and the worker's pids are written to
the files ``server`` and ``worker`` in the folder ``$STANDIN_PIDS``.
"""

import http.server
import os
import signal
import subprocess
import sys
import threading
import time


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the name http.server calls
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def write_pid(name: str, pid: int) -> None:
    folder = os.environ["STANDIN_PIDS"]
    with open(os.path.join(folder, name + ".tmp"), "w") as f:
        f.write(str(pid))
    os.replace(os.path.join(folder, name + ".tmp"), os.path.join(folder, name))  # never read half-written


def main() -> None:
    args = sys.argv[1:]
    model, host, port = args[1], args[args.index("--host") + 1], int(args[args.index("--port") + 1])
    if model != "plain":
        stubborn = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if "stubborn" in model else ""
        worker = subprocess.Popen([sys.executable, "-c", "import signal, time\n" + stubborn + "time.sleep(600)"])
        write_pid("server", os.getpid())
        write_pid("worker", worker.pid)
    httpd = http.server.ThreadingHTTPServer((host, port), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # at once, leaving the worker behind
    print("serving", flush=True)
    if "crash" in model:
        time.sleep(1.5)
        os._exit(1)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
