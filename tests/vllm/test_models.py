"""/v1/models through the router is the engines' own list, merged: every field vLLM gives a model
(max_model_len, root, parent, permission, owned_by) survives, so a client tells a LoRA adapter
from its base model as it would talking to vLLM directly."""

from __future__ import annotations

import httpx
import openai

from conftest import EMBED, LORA, MODEL

# Made afresh by vLLM on every call: not the model's, not compared.
VOLATILE = {"created"}


def stable(model: dict) -> dict:
    out = {k: v for k, v in model.items() if k not in VOLATILE}
    out["permission"] = [{k: v for k, v in p.items() if k not in {"id", "created"}} for p in model.get("permission", [])]
    return out


def test_models_keep_every_engine_field(router_factory, engines):
    router = router_factory()
    direct: dict[str, dict] = {}
    for e in engines.all:
        for m in httpx.get(f"{e.url}/v1/models", timeout=10).json()["data"]:
            direct.setdefault(m["id"], m)
    routed = router.get("/v1/models").json()
    assert routed["object"] == "list"
    by_id = {m["id"]: m for m in routed["data"]}
    assert len(by_id) == len(routed["data"]), "ids listed twice"
    assert set(by_id) == {MODEL, LORA, EMBED} == set(direct)
    for model_id, want in direct.items():
        assert stable(by_id[model_id]) == stable(want), model_id
    assert by_id[MODEL]["max_model_len"] == 4096
    assert by_id[EMBED]["max_model_len"] == 1024
    assert by_id[LORA]["parent"] == MODEL
    assert by_id[LORA]["root"].endswith("lora")
    assert by_id[MODEL]["parent"] is None
    assert by_id[MODEL]["permission"], "permission dropped"


def test_openai_client_lists_the_models(router_factory):
    router = router_factory()
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="none", max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {MODEL, LORA, EMBED}
    assert models[LORA].model_extra["parent"] == MODEL


def test_configured_models_are_listed_without_discovery(router_factory, engines):
    """A server whose models are set in the file is not asked: its entries are the router's own."""
    router = router_factory(servers=[{"url": engines.a.url, "models": [MODEL]},
                                     {"url": engines.embed.url}])
    data = {m["id"]: m for m in router.get("/v1/models").json()["data"]}
    assert set(data) == {MODEL, EMBED}
    assert data[MODEL]["owned_by"] == "vllm-router"
    assert data[EMBED]["max_model_len"] == 1024
