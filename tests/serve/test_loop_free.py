"""#15 item 1: a heavy ``/v1/decide/batch`` (many requests, 168 h look-ahead) runs off the
event loop: ``/healthz`` keeps answering, and other requests wait for the state, not for
the loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np

from pushrl.serve.app import create_app
from tests.serve.conftest import T0, doubles, make_cfg

H = 3600
N = 1000  # as the issue (~2 s on the Xeon VM, ~1 s on the AMD EPYC VM; 300 took 0.24 s
# there, under the 0.3 s the test needs to show anything)


async def _scenario(tmp: Path) -> tuple[float, float, int]:
    app = create_app(make_cfg(tmp), overrides=doubles())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.put("/v1/items/i0", json={"category": "a"})).status_code == 200
            for i in range(N):
                r = await c.put(f"/v1/users/u{i}", json={"ts": T0})
                assert r.status_code == 200, r.text
            body = {"requests": [{"user_id": f"u{i}", "ts": T0 + 3 * H, "horizon_hours": 168}
                                 for i in range(N)]}
            done: list[float] = []  # when each probe was answered

            async def probe() -> None:
                while True:
                    assert (await c.get("/healthz")).status_code == 200
                    done.append(time.perf_counter())
                    await asyncio.sleep(0.01)

            prober = asyncio.create_task(probe())
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            batch = asyncio.create_task(c.post("/v1/decide/batch", json=body))
            await asyncio.sleep(0.05)
            # a single decide meanwhile waits for the state, then sees the batch's decision
            single = await c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 4 * H})
            r = await batch
            took = time.perf_counter() - t0
            prober.cancel()
            assert r.status_code == 200, r.text
            assert len(r.json()["decisions"]) == N
            assert single.status_code == 200, single.text
            # quiet hours until 08:00: every decision waits and looks ahead
            send_at = {d["send_at"] for d in r.json()["decisions"]}
            assert send_at == {"2026-03-02T08:00:00Z"}, send_at
            during = [t for t in done if t >= t0] + [t0 + took]
            return took, float(np.diff([t0, *during]).max()), len(during) - 1


def test_healthz_answers_during_a_heavy_batch(tmp_path: Path) -> None:
    took, worst, n_probes = asyncio.run(_scenario(tmp_path))
    assert took > 0.3, f"the batch took {took:.2f} s: too light to show anything"
    assert n_probes >= 5
    # before: /healthz waited behind the whole batch (the longest gap == took)
    assert worst < max(0.25, 0.3 * took), (worst, took)
    print(f"batch {took:.2f} s; longest gap between /healthz answers {worst * 1e3:.0f} ms "
          f"({n_probes} answers)")
