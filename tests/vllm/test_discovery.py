"""Pod discovery in front of real vLLM: engines `a` and `b` stand for two pods of a Deployment (an
address each, one port), listed and watched through the stand-in Kubernetes API server
(tests/support/kube_api.py) with the official client; `embed` is a pod outside the selector."""

from __future__ import annotations

import openai

from conftest import LORA, MODEL, wait_until
from support.kube_api import KubeAPI


def serving(router) -> dict[str, dict]:
    return {s["name"]: s for s in router.get("/health").json()["servers"] if s["state"] != "draining"}


def test_the_router_follows_vllm_pods_and_their_models(engines, router_factory, tmp_path, monkeypatch):
    a, b, embed = engines.a, engines.b, engines.embed
    kube = KubeAPI(bookmark_interval=1.0).start()
    try:
        kube.add_pod("vllm-a", a.host)
        kube.add_pod("vllm-b", b.host)
        kube.add_pod("embed", embed.host, labels={"app": "embed"})
        monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "kubeconfig")))
        router = router_factory(servers=[], healthy=2, flags=[
            "--service-discovery", "k8s", "--k8s-namespace", kube.namespace,
            "--k8s-label-selector", "app=vllm", "--k8s-port", str(a.port)])
        pods = serving(router)
        assert set(pods) == {"vllm-a", "vllm-b"}
        assert pods["vllm-a"]["url"] == a.url and pods["vllm-b"]["url"] == b.url
        # Each pod's models come from its own /v1/models: the adapter only on a, with vLLM's entry.
        assert sorted(pods["vllm-a"]["supported_models"]) == sorted([MODEL, LORA])
        assert pods["vllm-b"]["supported_models"] == [MODEL]
        by_id = {m["id"]: m for m in router.get("/v1/models").json()["data"]}
        assert by_id[LORA]["parent"] == MODEL and by_id[MODEL]["max_model_len"] == 4096

        client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=120)

        def ask(model: str, tag: str) -> str:
            r = client.completions.with_raw_response.create(
                model=model, prompt="The fleet", max_tokens=4, temperature=0, extra_headers={"x-request-id": tag})
            assert r.http_response.status_code == 200
            return router.access_for(tag)["backend"]

        backends = {ask(MODEL, f"both-{i}") for i in range(8)}
        assert backends == {a.url, b.url}, backends
        # a turns not-Ready (a failing probe): drained, every request goes to b, and the adapter
        # only a serves is no model of the fleet any more (404, as from vLLM for an unknown model).
        kube.set_ready("vllm-a", False)
        assert wait_until(lambda: set(serving(router)) == {"vllm-b"}, timeout=5)
        assert {ask(MODEL, f"b-only-{i}") for i in range(4)} == {b.url}
        try:
            client.completions.create(model=LORA, prompt="x", max_tokens=2)
            raise AssertionError("the adapter was served with its only pod out of service")
        except openai.NotFoundError:
            pass
        # Ready again: it takes traffic, and the adapter is back.
        kube.set_ready("vllm-a", True)
        assert wait_until(lambda: set(serving(router)) == {"vllm-a", "vllm-b"}, timeout=5)
        assert ask(LORA, "adapter-back") == a.url
    finally:
        kube.stop()
