"""Answer and judge through an OpenAI-compatible server (mlx_lm.server, vLLM, llama.cpp, Ollama).

The requests carry the same chat messages and token budgets as the in-process path, at
temperature 0, so a server running the same model gives the same answers. Requests run
concurrently up to a bound; timeouts, dropped connections and 5xx are retried with
exponential backoff, a 4xx is a mistake in the request and fails at once. The standard
library is enough for this, so there is no client dependency.
"""

import http.client
import json
import math
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .answer import MAX_NEW_TOKENS, Answerer, prompt_messages
from .data import Record
from .grade import Grade, judge_messages

BACKENDS = ("mlx", "openai")
TIMEOUT_SECONDS = 300  # one request; a long answer on a busy CPU server takes a while
RETRIES = 4  # backoff 0.5, 1, 2, 4 s: a server restarting within ~8 s is waited for
BACKOFF_SECONDS = 0.5
VERDICT_TOKENS = 3  # enough for "yes"/"no" and a full stop; the verdict is the first word
TOP_LOGPROBS = 10  # within every server's limit (OpenAI 20, mlx_lm.server 11)


class ServerError(RuntimeError):
    """The server cannot be used: not up, refusing the request, or gone for good."""


@dataclass
class Backend:
    kind: str = "mlx"  # "mlx": the model in this process; "openai": a server at base_url
    base_url: str | None = None  # including the API prefix, e.g. http://127.0.0.1:8080/v1
    api_key_env: str | None = None  # name of the environment variable holding the API key
    model: str | None = None  # the name the server knows the model by; None: its default model


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


# Worth retrying: the server is overloaded, restarting, or the network dropped the request.
TRANSIENT = (urllib.error.URLError, TimeoutError, ConnectionError, socket.timeout, http.client.HTTPException)


def reason_of(error: Exception) -> str:
    return str(getattr(error, "reason", None) or error) or type(error).__name__


def request(backend: Backend, path: str, body: dict) -> dict:
    """POST JSON, with retries; a one-line ServerError when it cannot succeed."""
    url = endpoint(backend, path)
    for attempt in range(RETRIES + 1):
        try:
            req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers(backend))
            with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code < 500:
                detail = " ".join(e.read().decode(errors="replace").split())[:200]
                raise ServerError(f"{url} refused the request: HTTP {e.code} {detail}") from None
            reason = f"HTTP {e.code}"
        except TRANSIENT as e:
            reason = reason_of(e)
        except json.JSONDecodeError:
            raise ServerError(f"{url} did not answer with JSON; is --base-url an OpenAI-compatible API?") from None
        if attempt < RETRIES:
            time.sleep(BACKOFF_SECONDS * 2**attempt)
    raise ServerError(f"no answer from {url} after {RETRIES + 1} attempts ({reason}); is the server still up?")


def check_server(backend: Backend) -> None:
    """Fail at once, naming the URL, when nothing listens there: before any work, not after retries.

    Any HTTP answer counts as up (mlx_lm.server's /models can fail without a Hugging Face cache);
    the first request tells whether it is the right API.
    """
    url = endpoint(backend, "/models")
    try:
        urllib.request.urlopen(urllib.request.Request(url, headers=headers(backend)), timeout=30).close()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise ServerError(f"{url} refused the API key: HTTP {e.code}") from None
    except TRANSIENT as e:
        raise ServerError(f"no server answers at {backend.base_url} ({reason_of(e)}); "
                          "start it, or correct --base-url") from None


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


def answer_batch_openai(backend: Backend, records: list[Record], temperature: float = 0.0,
                        concurrency: int = 4) -> list[str]:
    """Answers for a batch of records, in order, at most `concurrency` requests at a time."""
    def one(record: Record) -> str:
        choice = complete(backend, prompt_messages(record), MAX_NEW_TOKENS[record.kind], temperature)
        return (choice.get("message", {}).get("content") or "").strip()

    return parallel(one, records, concurrency)


def answerer(backend: Backend, concurrency: int) -> Answerer:
    check_server(backend)
    return lambda records, temperature=0.0: answer_batch_openai(backend, records, temperature, concurrency)


def verdict_word(token: str) -> str:
    """'yes' for 'Yes', ' yes', 'Ġyes' (byte-level BPE as mlx_lm.server reports it), '▁YES', 'yes.'."""
    return token.replace("Ġ", " ").replace("▁", " ").strip().strip(".,!:").lower()


def verdict(choice: dict, threshold: float = 0.5) -> Grade:
    """The judge's grade from one completion: P(yes) against P(no) from the first token's
    top log-probabilities when the server gives them, else the first word of the reply."""
    logprobs = (choice.get("logprobs") or {}).get("content") or []
    top = logprobs[0].get("top_logprobs") or [] if logprobs else []
    yes = [t["logprob"] for t in top if verdict_word(t["token"]) == "yes"]
    no = [t["logprob"] for t in top if verdict_word(t["token"]) == "no"]
    if yes or no:
        # A word missing from the top list is at most as likely as the least likely listed token.
        floor = [min(t["logprob"] for t in top)]
        log_yes, log_no = logsumexp(yes or floor), logsumexp(no or floor)
        p = 1 / (1 + math.exp(log_no - log_yes))
        return Grade(p >= threshold, "judge-logprobs", p)
    words = (choice.get("message", {}).get("content") or "").split()
    said_yes = bool(words) and verdict_word(words[0]) == "yes"
    return Grade(said_yes, "judge-word", float(said_yes))


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def judge_openai(backend: Backend, items: list[tuple[Record, str]], concurrency: int = 4) -> list[Grade]:
    """The reference-guided judge of grade.py, asked over the server."""
    def one(item: tuple[Record, str]) -> Grade:
        choice = complete(backend, judge_messages(*item), VERDICT_TOKENS, 0.0, logprobs=True, top_logprobs=TOP_LOGPROBS)
        return verdict(choice)

    return parallel(one, items, concurrency)
