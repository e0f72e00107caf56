"""vla.model.rtc: the guided RTC step as a pure function, against LeRobot's RTCProcessor (a fixture its
own code wrote: tests/fixtures/rtc/generate.py), an explicit Jacobian, and a toy flow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vla.model.rtc import SCHEDULES, RTCRequest, guidance_weight, guided_velocity, prefix_weights
from vla.spec import SpecError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "rtc"


def _fixture():
    meta = json.loads((FIXTURE / "lerobot_rtc.json").read_text())
    arrays = dict(np.load(FIXTURE / "lerobot_rtc.npz"))
    return meta, arrays


def _tanh_denoiser(m: torch.Tensor, c: torch.Tensor):
    def denoise(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, m.shape[0]) if x.dim() == 3 else x.reshape(1, -1)
        return torch.tanh(flat @ m + c).reshape(x.shape)

    return denoise


def lerobot_parity(dtype=torch.float64) -> tuple[float, float]:
    """guided_velocity(jacobian=False) against LeRobot 0.4.4 over the fixture -> (max abs
    difference, max difference relative to max(1, |LeRobot's value|)). float64: both run every
    operation in float64; float32: as LeRobot's samplers call it (outputs reach ~40, where a
    float32 ulp is 3.8e-6)."""
    meta, arr = _fixture()
    m, c = (torch.from_numpy(arr[k]).to(dtype) for k in ("M", "c"))
    denoise = _tanh_denoiser(m, c)
    worst = worst_rel = 0.0
    for k, case in enumerate(meta["cases"]):
        x, prev = (torch.from_numpy(arr[n][k]).to(dtype) for n in ("x_t", "prev"))
        want = torch.from_numpy(arr["out64" if dtype == torch.float64 else "out"][k])
        prev = prev[:, : case["prev_len"]]
        if case["unbatched"]:
            x, prev, want = x[0], prev[0], want[0]
        got = guided_velocity(
            x,
            prev,
            case["inference_delay"],
            case["time"],
            denoise,
            case["execution_horizon"],
            schedule=case["schedule"],
            max_guidance_weight=case["max_guidance_weight"],
            jacobian=False,
        )
        assert got.shape == want.shape and got.dtype == dtype
        diff = (got - want).abs()
        worst = max(worst, diff.max().item())
        worst_rel = max(worst_rel, (diff / want.abs().clamp(min=1)).max().item())
    return worst, worst_rel


def test_no_jacobian_variant_matches_lerobot_rtc_processor():
    meta, _ = _fixture()
    assert meta["lerobot"] == "0.4.4" and len(meta["cases"]) >= 100
    assert {c["schedule"] for c in meta["cases"]} == set(SCHEDULES)
    assert any(c["prev_len"] < meta["H"] for c in meta["cases"]) and any(c["unbatched"] for c in meta["cases"])
    assert lerobot_parity(torch.float64)[0] <= 1e-5
    assert lerobot_parity(torch.float32)[1] <= 1e-6  # a few float32 ulps of values up to ~40


def test_prefix_weights_match_lerobot_schedules():
    meta, _ = _fixture()
    for c in meta["cases"]:
        w = prefix_weights(c["inference_delay"], min(c["execution_horizon"], c["prev_len"]), meta["H"], c["schedule"])
        assert torch.allclose(w, torch.tensor(c["weights"]), atol=1e-7), c


def test_schedule_shapes():
    h = 10
    lin = prefix_weights(3, 7, h, "linear")
    assert lin[:3].tolist() == [1, 1, 1] and lin[7:].tolist() == [0, 0, 0]
    assert torch.all(lin[3:7] < 1) and torch.all(lin[3:7] > 0) and torch.all(lin[3:8].diff() < 0)
    assert torch.allclose(lin[3:7], torch.tensor([4, 3, 2, 1]) / 5)
    exp = prefix_weights(3, 7, h, "exp")
    assert torch.equal(exp[:3], lin[:3]) and torch.equal(exp[7:], lin[7:])
    assert torch.all(exp[3:7] < lin[3:7])  # the exp schedule lets go sooner
    assert prefix_weights(3, 7, h, "zeros").tolist() == [1.0] * 3 + [0.0] * 7
    assert prefix_weights(3, 7, h, "ones").tolist() == [1.0] * 7 + [0.0] * 3
    assert prefix_weights(9, 4, h, "linear").tolist() == [1.0] * 4 + [0.0] * 6  # delay past the horizon
    assert prefix_weights(2, 50, 6, "linear").shape == (6,)  # horizon past the chunk
    with pytest.raises(SpecError, match="schedule"):
        prefix_weights(1, 2, 4, "cosine")
    with pytest.raises(SpecError, match="inference_delay"):
        prefix_weights(-1, 2, 4)


def test_guidance_weight_is_the_clamped_pigdm_weight():
    for t in (0.9, 0.5, 0.2, 0.05):
        tau = 1 - t
        published = (1 - tau) / tau * ((1 - tau) ** 2 + tau**2) / (1 - tau) ** 2
        assert math.isclose(guidance_weight(t, 1e9).item(), published, rel_tol=1e-12)
        assert guidance_weight(t, 2.0).item() == min(2.0, published)
    assert guidance_weight(1.0).item() == 10.0 and guidance_weight(0.0).item() == 0.0
    both = guidance_weight(torch.tensor([1.0, 0.5]), 3.0)
    assert both.tolist() == [3.0, 2.0]


def test_jacobian_variant_equals_explicit_vjp():
    """jacobian=True: v - c * J^T e with J = I - t dv/dx, against the closed-form Jacobian of
    v = tanh(x M + c) and a central finite difference (float64)."""
    g = torch.Generator().manual_seed(0)
    h, a = 5, 2
    n = h * a
    m = torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5
    c = 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    denoise = _tanh_denoiser(m, c)
    x = torch.randn(2, h, a, generator=g, dtype=torch.float64)
    prev = torch.randn(2, 4, a, generator=g, dtype=torch.float64)
    t, delay, horizon = 0.6, 1, 4
    got = guided_velocity(x, prev, delay, t, denoise, horizon, schedule="exp", max_guidance_weight=5.0)

    w = prefix_weights(delay, horizon, h, "exp").double()[None, :, None]
    target = torch.zeros_like(x)
    target[:, :4] = prev
    v = denoise(x)
    err = ((target - (x - t * v)) * w).reshape(2, n)
    vf = v.reshape(2, n)
    # dA_j/dx_i = delta_ij - t * M_ij (1 - v_j^2); correction_i = sum_j err_j dA_j/dx_i
    corr = err - t * (err * (1 - vf**2)) @ m.T
    want = v - guidance_weight(t, 5.0).item() * corr.reshape(2, h, a)
    assert torch.allclose(got, want, atol=1e-12)

    def clean(z):  # the clean estimate as a function of x, for finite differences
        return z - t * denoise(z)

    eps, fd = 1e-6, torch.zeros(2, n, dtype=torch.float64)
    for i in range(n):
        d = torch.zeros(2, n, dtype=torch.float64)
        d[:, i] = eps
        dx = d.reshape(2, h, a)
        fd[:, i] = ((clean(x + dx) - clean(x - dx)).reshape(2, n) * err).sum(1) / (2 * eps)
    assert torch.allclose(fd, corr, atol=1e-8)
    nojac = guided_velocity(
        x, prev, delay, t, denoise, horizon, schedule="exp", max_guidance_weight=5.0, jacobian=False
    )
    assert (nojac - got).abs().max() > 1e-3  # the Jacobian matters for this denoiser


def test_guided_velocity_inputs():
    g = torch.Generator().manual_seed(1)
    m, c = torch.randn(12, 12, generator=g) / 4, torch.zeros(12)
    denoise = _tanh_denoiser(m, c)
    x = torch.randn(3, 4, 3, generator=g)
    assert torch.equal(guided_velocity(x, None, 2, 0.5, denoise, 4), denoise(x))
    prev = torch.randn(1, 2, 2, generator=g)  # one row for the batch, shorter and narrower than x
    out = guided_velocity(x, prev, 1, torch.tensor([0.9, 0.5, 0.1]), denoise, 3)
    for i, t in enumerate((0.9, 0.5, 0.1)):
        row = guided_velocity(x[i], prev[0], 1, t, denoise, 3)
        assert torch.allclose(out[i], row, atol=1e-6)
    # dims masked out of the guidance keep the plain velocity
    masked = guided_velocity(x, prev, 1, 0.5, denoise, 3, jacobian=False, dim_mask=torch.tensor([1.0, 1.0, 0.0]))
    assert torch.equal(masked[..., 2], denoise(x)[..., 2])
    with pytest.raises(SpecError, match="prev_chunk"):
        guided_velocity(x, torch.zeros(2, 2, 2), 1, 0.5, denoise, 3)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="autograd"):
        guided_velocity(x, prev, 1, 0.5, denoise, 3)
    with torch.no_grad():  # fine outside inference mode
        guided_velocity(x, prev, 1, 0.5, denoise, 3)


def test_request_checks_and_helpers():
    prev = torch.ones(2, 3, 4)
    r = RTCRequest("inpaint", prev, 2, 5, dim_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool))
    w = r.inpaint_weights(6, 4, torch.zeros(1))
    assert w.shape == (2, 6, 4) and w[0, 0, 2] == 0 and w[1, 0, 2] == 1
    assert w[1, :, 0].tolist() == prefix_weights(2, 3, 6).tolist()  # horizon capped at the prev length
    assert r.padded(6, 5, torch.zeros(1)).shape == (2, 6, 5)
    assert RTCRequest("trained", prev, 5, 5).prefix_length(horizon=6, max_delay=4) == 3
    assert RTCRequest("guided", prev, 1, 5).needs_grad and not RTCRequest("guided-nojac", prev, 1, 5).needs_grad
    with pytest.raises(SpecError, match="mode"):
        RTCRequest("bidirectional", prev, 1, 5)
    with pytest.raises(SpecError, match="max_guidance_weight"):
        RTCRequest("guided", prev, 1, 5, max_guidance_weight=0.0)


def gaussian_flow_comparison(schedule: str = "linear", beta: float = 10.0, *, b: int = 400) -> dict:
    """Guided sampling on a flow whose exact velocity is known: chunks A ~ N(0, S) of smooth
    trajectories (h = 16, squared-exponential covariance, length 3), x_t = t noise + (1 - t) A,
    v(x, t) = (x - E[A | x_t]) / t. The previous chunk is a sample of the same prior; the first
    d = 4 steps are held, the weights reach 0 at step 10. -> per variant (jacobian True/False, and
    None = unguided): mean |error| on the held steps, and the Mahalanobis norm of the new chunk's
    free steps under the exact conditional p(A[d:] | A[:d] = prev[:d]) (a true conditional
    sample scores h - d = 12 on average: further from 12 is worse either way)."""
    h, d, horizon = 16, 4, 10
    i = torch.arange(h, dtype=torch.float64)
    s = torch.exp(-((i[:, None] - i[None]) ** 2) / (2 * 3.0**2)) + 1e-4 * torch.eye(h, dtype=torch.float64)
    eye = torch.eye(h, dtype=torch.float64)

    def velocity(x, t):
        mean = (1 - t) * (s @ torch.linalg.solve(t**2 * eye + (1 - t) ** 2 * s, x[..., 0].T)).T
        return ((x[..., 0] - mean) / t)[..., None]

    g = torch.Generator().manual_seed(0)
    prev = (torch.linalg.cholesky(s) @ torch.randn(h, b, generator=g, dtype=torch.float64)).T[..., None]
    s11, s21 = s[:d, :d], s[d:, :d]
    cond_mean = (s21 @ torch.linalg.solve(s11, prev[:, :d, 0].T)).T
    chol = torch.linalg.cholesky(s[d:, d:] - s21 @ torch.linalg.solve(s11, s21.T))
    noise = torch.randn(b, h, 1, generator=g, dtype=torch.float64)
    out = {}
    for jac in (True, False, None):
        x, steps = noise.clone(), 10
        for k in range(steps):
            t = 1 - k / steps
            if jac is None:
                v = velocity(x, t)
            else:
                v = guided_velocity(x, prev, d, t, lambda z, t=t: velocity(z, t), horizon, schedule, beta, jacobian=jac)
            x = x - v / steps
        z = torch.linalg.solve_triangular(chol, (x[:, d:, 0] - cond_mean).T, upper=False)
        out[jac] = {
            "held_error": (x[:, :d] - prev[:, :d]).abs().mean().item(),
            "mahalanobis": (z**2).sum(0).mean().item(),
        }
    return out


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_jacobian_guidance_is_at_least_as_good_on_a_gaussian_flow(schedule):
    """The continuation with the Jacobian is closer to a true conditional sample than without;
    both hold the prefix (without it the held steps end nearer the old plan, at the continuation's cost)."""
    r = gaussian_flow_comparison(schedule)
    print(schedule, {k: {n: round(x, 4) for n, x in v.items()} for k, v in r.items()})
    off = {k: abs(v["mahalanobis"] - 12) for k, v in r.items()}
    assert off[True] <= off[False] < off[None]
    assert r[True]["held_error"] < 0.1 * r[None]["held_error"] and r[False]["held_error"] < 0.1 * r[None]["held_error"]
