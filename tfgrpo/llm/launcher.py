"""Launch a local OpenAI-compatible server as a child process and wait until it answers
``/health``: ``vllm serve`` on GPU machines, ``transformers serve`` (continuous batching) on CPU.

Neither the server nor any process it starts outlives us: the server runs under a keeper
(:mod:`tfgrpo.keeper`) that the kernel signals when we die, even by SIGKILL, and that then stops
the server's whole process group (SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds); it also
stops the workers a server leaves behind when it exits by itself. The keeper runs in its own
session, so a Ctrl-C in the terminal reaches only us; we stop the server by sending the keeper
SIGTERM, and an ``atexit`` hook does so on a normal exit. Started with ``start(background=True)``
the server is the exception: it runs without a keeper and keeps running after we exit
(``tfgrpo serve --background``), until its process group is sent SIGTERM.

The health check goes straight to the server, never through the environment's proxy
(``HTTP_PROXY``, ``ALL_PROXY``): the server is on this machine.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import socket
import shlex
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import httpx

from tfgrpo import keeper
from tfgrpo.errors import UserError

EXECUTABLE_ENV = "TFGRPO_VLLM_EXECUTABLE"
TRANSFORMERS_EXECUTABLE_ENV = "TFGRPO_TRANSFORMERS_EXECUTABLE"
LOG_TAIL_LINES = 20
ENGINES = ("vllm", "transformers")
log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _resolve_executable(
    executable: str | os.PathLike[str] | None,
    env: str = EXECUTABLE_ENV,
    default: str = "vllm",
    hint: str = f"pip install 'tfgrpo[vllm]' (needs a GPU), or set {EXECUTABLE_ENV} to a vllm executable "
    "(tfgrpo serve: --vllm-executable)",
) -> str:
    name = str(executable or os.environ.get(env) or default)
    # Installed next to this interpreter (a virtual environment not on PATH) counts as found.
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise UserError(f"{default} not found ({name}): {hint}")
    return found


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open(errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except OSError:
        return ""


class LocalServer:
    """A local server child process; ``base_url`` is its OpenAI-compatible endpoint and
    ``client_model`` the model name a client sends it. Subclasses say how to start it.

    ``with VLLMServer("Qwen/Qwen3-8B") as server: ...`` starts it and waits for health.
    """

    engine = "server"
    client_prefix = "openai/"
    STOP_GRACE = 30.0  # seconds a server's process group gets to stop after SIGTERM, before SIGKILL

    def __init__(
        self,
        model: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        log_path: Path | str | None = None,
        health_timeout: float = 600.0,
        executable: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path or f"{self.engine}.log")
        self.health_timeout = health_timeout
        self.executable = executable
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}/health"

    @property
    def served_name(self) -> str:
        """The model's name on the server: what a request's ``model`` must say."""
        return self.model

    @property
    def client_model(self) -> str:
        """The model name to give the client (litellm provider prefix + served name)."""
        return f"{self.client_prefix}{self.served_name}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's environment (None: this process's)."""
        return None

    def working_directory(self) -> str | None:
        """The child's working directory (None: ours)."""
        return None

    def start(self, background: bool = False) -> "LocalServer":
        """Start the process and block until ``/health`` answers 200. ``background``: the server
        outlives this process (no keeper, no stop at exit); it is stopped here only if it does
        not become healthy. Otherwise ``process`` is the keeper, which the server's exit status
        passes through."""
        if self.process is not None:
            return self
        cmd = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(("$ " + shlex.join(cmd) + "\n").encode())  # the log says what was started
            log.flush()
            self.process = subprocess.Popen(
                cmd if background else keeper.command(cmd, self.STOP_GRACE), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.environment(), cwd=self.working_directory(), start_new_session=True,
            )  # fmt: skip
        self.started_at = time.monotonic()
        atexit.register(self.stop)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        if background:
            atexit.unregister(self.stop)
        return self

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.health_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:  # never through a proxy
            while True:
                code = self.process.poll()
                if code is not None:
                    raise UserError(
                        f"{self.engine} exited with code {code} before it was ready; last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                try:
                    if client.get(self.health_url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise UserError(
                        f"{self.engine} was not healthy after {self.health_timeout:.0f}s (raise --health-timeout for a large model); "
                        f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.5)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM to the process group (the keeper's, which stops the server's group), wait up to
        ``grace`` seconds (default ``STOP_GRACE``, plus the keeper's own wait), then SIGKILL."""
        proc, self.process = self.process, None
        atexit.unregister(self.stop)
        if proc is None or proc.poll() is not None:
            return
        grace = self.STOP_GRACE if grace is None else grace
        for sig, wait in ((signal.SIGTERM, grace + 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # workers the server left behind in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class VLLMServer(LocalServer):
    """``vllm serve MODEL`` with prefix caching (GPU machines)."""

    engine = "vllm"
    client_prefix = "hosted_vllm/"

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len

    @property
    def served_name(self) -> str:
        """A local directory is served under its own name (``--served-model-name``), unless the
        extra arguments name it otherwise."""
        local = Path(self.model)
        if ("/" in self.model or os.sep in self.model) and local.is_dir():
            named = [a for a in self.extra_args if a.startswith("--served-model-name")]
            if not named:
                return local.resolve().name
        return super().served_name

    def command(self) -> list[str]:
        named = [] if self.served_name == self.model else ["--served-model-name", self.served_name]
        cmd = [
            _resolve_executable(self.executable), "serve", self.model, *named,
            "--host", self.host, "--port", str(self.port),
            "--enable-prefix-caching",
            "--tensor-parallel-size", str(self.tensor_parallel_size),
            "--gpu-memory-utilization", str(self.gpu_memory_utilization),
        ]  # fmt: skip
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        return cmd + self.extra_args


class TransformersServer(LocalServer):
    """``transformers serve DIR --continuous-batching`` (CPU machines; a Hugging Face directory,
    for example the one ``tfgrpo models fetch`` makes). Without continuous batching concurrent
    requests hang it. ``threads`` caps torch's CPU threads: on a machine whose cores other work
    keeps busy, one thread decodes several times faster than threads that spin waiting for each
    other. ``kv_cache_tokens`` sizes the paged KV cache: left to itself, transformers sizes it
    from the machine's memory (14 GB resident for the 135M SmolLM2 on a 24 GiB machine, against
    1.9 GB with the default 16384 tokens, which hold 16 requests of 1000 tokens at once)."""

    engine = "transformers"
    client_prefix = "openai/"
    PAGE_TOKENS = 256  # transformers' continuous-batching page size
    BATCH_TOKENS = 1024  # tokens per forward step (longer prefills are split), bounds the logits' memory

    def __init__(self, model: str, device: str = "cpu", threads: int | None = None, kv_cache_tokens: int = 16384,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(model, **kwargs)
        self.device = device
        self.threads = threads
        if kv_cache_tokens < self.PAGE_TOKENS:
            raise UserError(f"--kv-cache-tokens {kv_cache_tokens}: at least {self.PAGE_TOKENS}")
        self.kv_cache_tokens = kv_cache_tokens

    def environment(self) -> dict[str, str] | None:
        if not self.threads:
            return None
        return {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    def _local_dir(self) -> Path | None:
        path = Path(self.model)
        return path if ("/" in self.model or os.sep in self.model) and path.is_dir() else None

    @property
    def served_name(self) -> str:
        """A local directory is served under its own name (``smollm2-135m-instruct``, not
        ``/home/.../smollm2-135m-instruct``): the server runs in its parent directory."""
        local = self._local_dir()
        return local.resolve().name if local is not None else self.model

    def working_directory(self) -> str | None:
        local = self._local_dir()
        return str(local.resolve().parent) if local is not None else None

    def sampling_problem(self) -> str | None:
        """Why this server would answer every request greedily, whatever its temperature, or None.
        ``transformers serve --continuous-batching`` builds its samplers once from the model's
        generation config: without ``do_sample``, a default temperature other than 1.0 and a
        ``top_k``, a request's temperature is dropped and every answer is the argmax (G copies
        in a group). Only a local directory is checked; ``tfgrpo models fetch`` writes these."""
        local = self._local_dir()
        if local is None:
            return None
        try:
            config = json.loads((local / "generation_config.json").read_text())
        except (OSError, ValueError):
            config = {}
        if not isinstance(config, dict):
            config = {}
        missing = [
            what for what, ok in (
                ("do_sample: true", config.get("do_sample") is True),
                ("a temperature other than 1.0", config.get("temperature") not in (None, 1, 1.0)),
                ("top_k (the vocabulary size)", bool(config.get("top_k"))),
            ) if not ok
        ]  # fmt: skip
        if not missing:
            return None
        return (f"{local / 'generation_config.json'} lacks {', '.join(missing)}: transformers serve will ignore "
                "the requests' temperature and give the same answer to every sample (add them there; "
                "tfgrpo models fetch does for its models)")  # fmt: skip

    def start(self, background: bool = False) -> "LocalServer":
        problem = self.sampling_problem()
        if problem:
            log.warning("%s", problem)
        return super().start(background)

    def command(self) -> list[str]:
        exe = _resolve_executable(self.executable, TRANSFORMERS_EXECUTABLE_ENV, "transformers",
                                  "pip install 'tfgrpo[train]' (transformers[serving]) or pass --executable")  # fmt: skip
        cache = [] if any(a.startswith(("--cb-num-blocks", "--cb-max-memory")) for a in self.extra_args) else [
            "--cb-num-blocks", str(-(-self.kv_cache_tokens // self.PAGE_TOKENS)),
            "--cb-max-batch-tokens", str(min(self.BATCH_TOKENS, self.kv_cache_tokens))]  # fmt: skip
        return [exe, "serve", self.served_name, "--device", self.device, "--continuous-batching", *cache,
                "--host", self.host, "--port", str(self.port), *self.extra_args]  # fmt: skip


def local_server(engine: str, model: str, **kwargs: Any) -> LocalServer:
    """The server for ``engine`` (one of ``ENGINES``); options the engine lacks are refused."""
    cls = {"vllm": VLLMServer, "transformers": TransformersServer}.get(engine)
    if cls is None:
        raise UserError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    try:
        return cls(model, **kwargs)
    except TypeError as e:
        raise UserError(f"engine {engine}: {e}") from None
