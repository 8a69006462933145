"""What a client gets through the router is what the engine gives, at once and token by token:
chat and completions, streaming and not, tokenize/detokenize and embeddings, each routed by the
model it names."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from conftest import EMBED, LORA, MODEL

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


def clients(router, engines):
    routed = openai.OpenAI(base_url=f"{router.url}/v1", api_key="none", max_retries=0)
    direct = openai.OpenAI(base_url=f"{engines.a.url}/v1", api_key="none", max_retries=0)
    return routed, direct


@pytest.fixture(scope="module")
def shared_router(engines, tmp_path_factory):
    """One router for this module's read-only tests."""
    from conftest import Router
    servers = [{"url": e.url, "max_concurrent_requests": 4} for e in engines.all]
    router = Router(tmp_path_factory.mktemp("router"), servers,
                    {"health_check_interval": 1, "engine_stats_interval": 0.5}, [])
    router.wait_ready(3)
    yield router
    router.stop()


def test_chat_same_text_as_direct(shared_router, engines):
    routed, direct = clients(shared_router, engines)
    kw = dict(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    want = direct.chat.completions.create(**kw)
    got = routed.chat.completions.create(**kw)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.usage.completion_tokens == 24

    def streamed(client) -> str:
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kw, stream=True)
                       if c.choices)
    assert streamed(routed) == streamed(direct) == want.choices[0].message.content


def test_completions_same_text_as_direct(shared_router, engines):
    routed, direct = clients(shared_router, engines)
    kw = dict(model=MODEL, prompt="The licence says", max_tokens=24, temperature=0)
    want = direct.completions.create(**kw).choices[0].text
    assert routed.completions.create(**kw).choices[0].text == want
    assert "".join(c.choices[0].text for c in routed.completions.create(**kw, stream=True)) == want


def stream_arrivals(url: str) -> list[float]:
    """When each event of a 400-token completion stream arrived, in seconds from the request."""
    body = {"model": MODEL, "prompt": "go", "max_tokens": 400, "ignore_eos": True, "temperature": 0,
            "stream": True}
    arrivals = []
    start = time.monotonic()
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - start)
    return arrivals


def test_streamed_tokens_arrive_spread_over_time(shared_router, engines):
    """Relayed as generated: the first token comes long before the last, in as many separate
    moments as straight from the engine (which batches its output under load, so the count is
    compared with the engine's own, measured in the same run)."""
    direct = stream_arrivals(engines.a.url)
    routed = stream_arrivals(shared_router.url)
    total = routed[-1]
    assert len(routed) >= 350
    assert total > 1.0, f"400 tokens in {total:.2f} s: too fast to tell streaming from buffering"
    # Buffering would put every arrival at the end.
    assert routed[0] < 0.5 * total, (routed[0], total)
    assert total - routed[0] > 0.5
    moments = lambda arrivals: len({round(t, 3) for t in arrivals})
    assert moments(routed) >= max(10, moments(direct) // 2), (moments(routed), moments(direct))


def test_tokenize_and_detokenize(shared_router, engines):
    body = {"model": MODEL, "prompt": "Permission is hereby granted"}
    direct = httpx.post(f"{engines.a.url}/tokenize", json=body, timeout=10).json()
    routed = httpx.post(f"{shared_router.url}/tokenize", json=body, timeout=10)
    assert routed.status_code == 200
    assert routed.json()["tokens"] == direct["tokens"]
    back = httpx.post(f"{shared_router.url}/detokenize", json={"model": MODEL, "tokens": direct["tokens"]}, timeout=10)
    assert back.status_code == 200
    assert back.json()["prompt"] == body["prompt"]


def test_embeddings_go_to_the_embedding_engine(shared_router, engines):
    rid = f"emb-{uuid.uuid4().hex[:8]}"
    routed = openai.OpenAI(base_url=f"{shared_router.url}/v1", api_key="none", max_retries=0)
    direct = openai.OpenAI(base_url=f"{engines.embed.url}/v1", api_key="none", max_retries=0)
    got = routed.embeddings.create(model=EMBED, input=["hello", "world"], extra_headers={"X-Request-Id": rid})
    want = direct.embeddings.create(model=EMBED, input=["hello", "world"])
    assert len(got.data) == 2
    assert got.data[0].embedding == pytest.approx(want.data[0].embedding, abs=1e-6)
    assert shared_router.access_for(rid)["backend"] == engines.embed.url


def test_each_model_goes_only_to_the_servers_that_serve_it(shared_router, engines):
    client = openai.OpenAI(base_url=f"{shared_router.url}/v1", api_key="none", max_retries=0)
    lora_ids, base_ids = [], []
    for i in range(8):
        rid = f"lora-{i}-{uuid.uuid4().hex[:6]}"
        lora_ids.append(rid)
        client.completions.create(model=LORA, prompt="hi", max_tokens=2, extra_headers={"X-Request-Id": rid})
        rid = f"base-{i}-{uuid.uuid4().hex[:6]}"
        base_ids.append(rid)
        client.completions.create(model=MODEL, prompt="hi", max_tokens=2, extra_headers={"X-Request-Id": rid})
    assert {shared_router.access_for(r)["backend"] for r in lora_ids} == {engines.a.url}
    assert {shared_router.access_for(r)["backend"] for r in base_ids} <= {engines.a.url, engines.b.url}
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
