"""Chat completions from an OpenAI-compatible server (mlx_lm.server, vLLM, llama.cpp, Ollama): the
transport that backends.py answers and judge.py judges through.

Requests run concurrently up to a bound over one kept-alive httpx client per server. A busy or restarting
server is waited for: timeouts, dropped connections, 408, 429 and 5xx are retried (tenacity)
with exponential backoff and jitter, or after the server's Retry-After; any other 4xx is a
mistake in the request and fails at once.
"""

import email.utils
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

TIMEOUT_SECONDS = 300  # one request; a long answer on a busy CPU server takes a while
ATTEMPTS = 5  # backoff about 0.5, 1, 2, 4 s: a server restarting within ~8 s is waited for
BACKOFF_SECONDS = 0.5
MAX_RETRY_AFTER_SECONDS = 60  # a Retry-After beyond this is waited for this long, so a run never hangs
RETRIED_STATUS = {408, 429}  # with every 5xx: the server is overloaded, timed out or restarting
CHECK_TIMEOUT_SECONDS = 30


@dataclass
class Backend:
    """Who answers or judges in a run (--backend, --judge-backend): a kind of backends.py's, and where its
    server is, which is all a request here reads. It lives beside the requests so that backends.py and
    judge.py, which both send them, import it from below rather than from each other."""
    kind: str = "mlx"  # a key of backends.BACKENDS
    base_url: str | None = None  # including the API prefix, e.g. http://127.0.0.1:8080/v1
    api_key_env: str | None = None  # name of the environment variable holding the API key
    model: str | None = None  # the name the server knows the model by; None: its default model


class ServerError(RuntimeError):
    """The server cannot be used: not up, refusing the request, or gone for good."""


class Transient(Exception):
    """A failure worth another attempt, with the wait the server asked for, if it did."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def endpoint(backend: Backend, path: str) -> str:
    return backend.base_url.rstrip("/") + path


def headers(backend: Backend) -> dict:
    result = {"Content-Type": "application/json"}
    if backend.api_key_env:
        key = os.environ.get(backend.api_key_env)
        if not key:
            raise ServerError(f"the environment variable {backend.api_key_env} (--api-key-env) is not set")
        result["Authorization"] = f"Bearer {key}"
    return result


CLIENTS: dict[tuple, httpx.Client] = {}
CLIENTS_LOCK = threading.Lock()


def client(backend: Backend) -> httpx.Client:
    """One client per server and key, shared by the threads: its connections are kept alive."""
    key = (backend.base_url, backend.api_key_env)
    with CLIENTS_LOCK:
        if key not in CLIENTS:
            CLIENTS[key] = httpx.Client(headers=headers(backend), timeout=TIMEOUT_SECONDS)
        return CLIENTS[key]


def reason_of(error: Exception) -> str:
    return str(error) or type(error).__name__


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (it may be a number or an HTTP date); None when absent."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):  # neither: as if absent
        return None


def post(backend: Backend, url: str, body: dict) -> dict:
    """One attempt: the JSON answer, a Transient failure, or a ServerError."""
    try:
        response = client(backend).post(url, json=body)
    except httpx.TransportError as e:  # timeouts, refused or dropped connections
        raise Transient(reason_of(e)) from e
    if response.status_code in RETRIED_STATUS or response.status_code >= 500:
        raise Transient(f"HTTP {response.status_code}", retry_after(response))
    if response.status_code >= 400:
        detail = " ".join(response.text.split())[:200]
        raise ServerError(f"{url} refused the request: HTTP {response.status_code} {detail}")
    try:
        return response.json()
    except ValueError:
        raise ServerError(f"{url} did not answer with JSON; is --base-url an OpenAI-compatible API?") from None


JITTERED_BACKOFF = wait_exponential_jitter(multiplier=BACKOFF_SECONDS, jitter=BACKOFF_SECONDS)


def backoff(state) -> float:
    """The server's Retry-After when it gave one (bounded), else exponential backoff with jitter."""
    asked = getattr(state.outcome.exception(), "retry_after", None)
    return JITTERED_BACKOFF(state) if asked is None else min(asked, MAX_RETRY_AFTER_SECONDS)


def request(backend: Backend, path: str, body: dict) -> dict:
    """POST JSON, with retries; a one-line ServerError when it cannot succeed."""
    url = endpoint(backend, path)
    attempts = Retrying(stop=stop_after_attempt(ATTEMPTS), wait=backoff, retry=retry_if_exception_type(Transient),
                        reraise=True)
    try:
        return attempts(post, backend, url, body)
    except Transient as e:
        raise ServerError(f"no answer from {url} after {ATTEMPTS} attempts ({e}); is the server still up?") from None


def check_server(backend: Backend) -> None:
    """Fail at once, naming the URL, when nothing listens there: before any work, not after retries.

    Any HTTP answer counts as up (mlx_lm.server's /models can fail without a Hugging Face cache);
    the first request tells whether it is the right API.
    """
    try:
        response = client(backend).get(endpoint(backend, "/models"), timeout=CHECK_TIMEOUT_SECONDS)
    except httpx.TransportError as e:
        raise ServerError(f"no server answers at {backend.base_url} ({reason_of(e)}); "
                          "start it, or correct --base-url") from None
    if response.status_code in (401, 403):
        raise ServerError(f"{endpoint(backend, '/models')} refused the API key: HTTP {response.status_code}")


def complete(backend: Backend, messages: list[dict], max_tokens: int, temperature: float, **extra) -> dict:
    """The first choice of a chat completion."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature, **extra}
    if backend.model:
        body["model"] = backend.model
    response = request(backend, "/chat/completions", body)
    try:
        return response["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise ServerError(f"{endpoint(backend, '/chat/completions')} answered without choices: "
                          f"{json.dumps(response)[:200]}") from None


def parallel(fn, items: list, concurrency: int) -> list:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(fn, items))
