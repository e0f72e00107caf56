import numpy as np
import pytest

from vla.runtime.chunking import ChunkExecutor, ChunkingConfig, resample, rtc_weights
from vla.spec import SpecError


def test_resample_keeps_the_trajectory_in_time():
    chunk = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # 0..4 at 20 Hz
    r = resample(chunk, 20, 50)
    assert r.shape == (11, 2)  # 0.2 s at 50 Hz
    assert np.allclose(r[:, 0], np.arange(11) * 0.4) and np.allclose(r[-1], 4.0)
    assert resample(chunk, 50, 50) is not chunk and np.array_equal(resample(chunk, 50, 50), chunk)


def test_rtc_weights_freeze_then_decay_then_zero():
    w = rtc_weights(10, d=3, overlap=7)
    assert np.all(w[:3] == 1) and np.all(w[7:] == 0)
    assert np.all(np.diff(w[3:7]) < 0) and 0 < w[6] < w[3] < 1
    assert np.array_equal(rtc_weights(5, d=4, overlap=2), [1, 1, 0, 0, 0])


def _ramp(start, n=10, a=2):
    return (start + np.arange(n, dtype=np.float32))[:, None] * np.ones((1, a), np.float32)


def test_sync_executes_then_holds_and_restarts_from_the_first_action():
    ex = ChunkExecutor(ChunkingConfig(mode="sync", execute_s=0.25), loop_hz=20, policy_hz=20)
    assert ex.want_request(0) and ex.action(0) is None
    ex.on_chunk(_ramp(0), k_obs=0, k_now=3)
    assert [ex.action(k)[0] for k in range(3, 8)] == [0, 1, 2, 3, 4]
    assert ex.action(8) is None  # execute_s = 5 ticks, then hold
    assert not ex.want_request(6) and ex.want_request(7)


def test_async_skips_elapsed_actions_and_blends():
    ex = ChunkExecutor(ChunkingConfig(mode="async", execute_s=0.25, blend_s=0.1), loop_hz=20, policy_hz=20)
    ex.on_chunk(_ramp(0), k_obs=-1, k_now=0)  # first chunk: from its start
    assert ex.action(0)[0] == 0
    ex.on_chunk(_ramp(100), k_obs=2, k_now=5)  # chunk[0] was meant for tick 3: two actions are stale
    assert ex.delays[-1] == 3
    a5 = ex.action(5)[0]
    assert 5 < a5 < 102 and ex.action(7)[0] == 104  # blended over 2 ticks, then the new chunk
    ex.on_chunk(_ramp(0, n=3), k_obs=5, k_now=20)
    assert ex.stats["stale"] == 1  # arrived after its last action


def test_rtc_guide_is_the_plan_that_will_run_and_the_switch_needs_no_blend():
    ex = ChunkExecutor(ChunkingConfig(mode="rtc", execute_s=0.25, delay_margin=0), loop_hz=20, policy_hz=20)
    ex.on_chunk(_ramp(0), k_obs=-1, k_now=0)
    ex.delays.append(3)
    guide, w = ex.guide(4, horizon=10)
    assert np.array_equal(guide[:5, 0], [5, 6, 7, 8, 9]) and np.all(guide[5:, 0] == 9)
    assert np.all(w[:3] == 1) and np.all(w[5:] == 0) and 0 < w[3] < 1
    new = guide.copy()  # a perfectly inpainted chunk
    ex.on_chunk(new, k_obs=4, k_now=7)
    assert ex.action(7)[0] == 7  # continues the old plan exactly


def test_bad_mode_is_rejected():
    with pytest.raises(SpecError, match="mode: expected one of"):
        ChunkingConfig(mode="fast")


def test_rtc_inpaint_is_rtc():
    ex = ChunkExecutor(ChunkingConfig(mode="rtc-inpaint", execute_s=0.25, delay_margin=0), loop_hz=20, policy_hz=20)
    assert ex.cfg.rtc == "inpaint" and ex.request(0, 10) == {}  # no plan yet: a plain request
    ex.on_chunk(_ramp(0), k_obs=-1, k_now=0)
    ex.delays.append(3)
    req = ex.request(4, 10)
    assert set(req) == {"guide", "guide_weights"} and np.array_equal(req["guide"][:5, 0], [5, 6, 7, 8, 9])


@pytest.mark.parametrize("mode", ["rtc-guided", "rtc-guided-nojac", "rtc-trained"])
def test_rtc_request_carries_the_plan_from_the_new_chunks_first_step(mode):
    cfg = ChunkingConfig(mode=mode, execute_s=0.25, delay_margin=0, schedule="exp", max_guidance_weight=5.0)
    ex = ChunkExecutor(cfg, loop_hz=20, policy_hz=20)
    assert ex.request(0, 10) == {}  # the first chunk has nothing to agree with
    ex.on_chunk(_ramp(0), k_obs=-1, k_now=0)
    ex.delays.append(4)  # measured: the chunk of tick k is first used at tick k + 4
    rtc = ex.request(4, 10)["rtc"]
    assert rtc["mode"] == mode.removeprefix("rtc-")
    # The new chunk's step j is meant for tick 5 + j; the old plan ends at tick 9: 5 steps overlap.
    assert rtc["prev_chunk"].dtype == np.float32 and np.array_equal(rtc["prev_chunk"][:, 0], [5, 6, 7, 8, 9])
    assert rtc["inference_delay"] == 3  # ticks 5, 6, 7 run from the old plan; the new one starts at 8
    assert rtc["execution_horizon"] == 5  # 0 in the config: the whole overlap
    assert rtc["schedule"] == "exp" and rtc["max_guidance_weight"] == 5.0
    new = _ramp(100)
    assert ex.on_chunk(new, k_obs=4, k_now=8)
    assert [ex.action(k)[0] for k in (8, 9)] == [103, 104]  # switched at k_obs + 1 + d, no blend


def test_rtc_request_in_policy_steps_when_the_loop_is_faster():
    cfg = ChunkingConfig(mode="rtc-guided", execute_s=0.4, delay_margin=0, execution_horizon=3)
    ex = ChunkExecutor(cfg, loop_hz=50, policy_hz=20)  # 2.5 ticks per policy step
    ex.on_chunk(_ramp(0), k_obs=-1, k_now=0)  # 10 policy steps -> 23 ticks
    ex.delays.append(6)  # 5 ticks of the old plan run: 2 policy steps
    rtc = ex.request(9, 10)["rtc"]
    assert rtc["inference_delay"] == 2 and rtc["execution_horizon"] == 3
    np.testing.assert_allclose(rtc["prev_chunk"][:, 0], [4.0, 5.0, 6.0, 7.0, 8.0], atol=1e-6)  # ticks 10, 12.5, ...


def test_sync_and_async_requests_are_plain():
    for mode in ("sync", "async"):
        ex = ChunkExecutor(ChunkingConfig(mode=mode), loop_hz=20, policy_hz=20)
        ex.on_chunk(_ramp(0), k_obs=-1, k_now=0)
        assert ex.request(2, 10) == {}


def test_bad_rtc_options_are_rejected():
    with pytest.raises(SpecError, match="schedule"):
        ChunkingConfig(mode="rtc-guided", schedule="cosine")
    with pytest.raises(SpecError, match="execution_horizon"):
        ChunkingConfig(mode="rtc-guided", execution_horizon=-1)
