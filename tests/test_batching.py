"""The in-process dynamic batcher's logic, with a fake model (unit tests; the service tests use ORT)."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ganserve.service.batching import DynamicBatcher
from ganserve.service.errors import DeadlineExceeded, Overloaded


class Recorder:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.started = threading.Event()  # set when the first batch begins to run
        self.batches: list[int] = []
        self.observed: list[tuple[int, float, float]] = []

    def run(self, inputs, outputs):
        self.started.set()
        time.sleep(self.delay_s)
        self.batches.append(len(inputs["z"]))
        return {name: inputs["z"] * (2.0 if name == "double" else 1.0) for name in outputs}

    def batch_done(self, backend, model, batch_size, queue_s, inference_s):
        self.observed.append((batch_size, queue_s, inference_s))


def batcher(recorder, **kwargs):
    return DynamicBatcher(
        recorder.run, ThreadPoolExecutor(1), model="m", observer=recorder, **kwargs
    )


def z(n, start=0.0):
    return {"z": (np.arange(n, dtype=np.float32) + start).reshape(n, 1)}


def test_concurrent_requests_merge_and_each_gets_its_own_rows():
    recorder = Recorder(delay_s=0.01)

    async def scenario():
        b = batcher(recorder, max_batch_size=64, max_queue_delay_s=0.05)
        results = await asyncio.gather(*(b.submit(z(1, start=i), ["double"]) for i in range(20)))
        return results

    results = asyncio.run(scenario())
    assert [float(r["double"][0, 0]) for r in results] == [2.0 * i for i in range(20)]
    assert sum(recorder.batches) == 20 and len(recorder.batches) < 20
    assert [o[0] for o in recorder.observed] == recorder.batches


def test_batches_never_exceed_the_maximum_and_big_requests_are_split():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch_size=8, max_queue_delay_s=0.02)
        big, *small = await asyncio.gather(
            b.submit(z(20), ["out"]), *(b.submit(z(3), ["out"]) for _ in range(5))
        )
        return big, small

    big, small = asyncio.run(scenario())
    np.testing.assert_array_equal(big["out"][:, 0], np.arange(20))
    assert all(len(s["out"]) == 3 for s in small)
    assert max(recorder.batches) <= 8 and sum(recorder.batches) == 35


def test_batching_off_runs_every_request_alone():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch_size=64, max_queue_delay_s=0.05, enabled=False)
        await asyncio.gather(*(b.submit(z(2), ["out"]) for _ in range(6)))

    asyncio.run(scenario())
    assert recorder.batches == [2] * 6


def test_a_full_queue_is_refused_at_once():
    recorder = Recorder(delay_s=0.2)

    async def scenario():
        b = batcher(recorder, max_batch_size=4, max_queue_delay_s=0.0, max_queued_images=6)
        first = asyncio.ensure_future(b.submit(z(4), ["out"]))
        while not recorder.started.is_set():  # the first batch is running; the queue is empty again
            await asyncio.sleep(0.005)
        second = asyncio.ensure_future(b.submit(z(4), ["out"]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue full"):
            await b.submit(z(4), ["out"])  # 4 waiting + 4 > 6
        await asyncio.gather(first, second)

    asyncio.run(scenario())


def test_deadline_while_queued_raises_and_the_request_is_skipped():
    recorder = Recorder(delay_s=0.2)

    async def scenario():
        b = batcher(recorder, max_batch_size=1, max_queue_delay_s=0.0)
        running = asyncio.ensure_future(b.submit(z(1), ["out"]))
        while not recorder.started.is_set():
            await asyncio.sleep(0.005)
        with pytest.raises(DeadlineExceeded):
            await b.submit(z(1, start=5), ["out"], timeout_s=0.05)
        await running
        await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert recorder.batches == [1]  # the timed-out request never ran


def test_an_inference_error_reaches_every_caller_of_the_batch():
    def broken(inputs, outputs):
        raise RuntimeError("boom")

    async def scenario():
        b = DynamicBatcher(broken, ThreadPoolExecutor(1), model="m", max_queue_delay_s=0.01)
        return await asyncio.gather(
            *(b.submit(z(1), ["out"]) for _ in range(3)), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_chunk_sizes_cap_the_batch_and_give_every_instance_a_share():
    from ganserve.service.batching import chunk_sizes

    assert chunk_sizes(64, 64, 2) == [32, 32]  # one bulk request keeps both cores busy
    assert chunk_sizes(20, 8, 1) == [7, 7, 6]  # never over the maximum, as even as can be
    assert chunk_sizes(3, 64, 2) == [3]  # too small to be worth cutting
    assert chunk_sizes(1, 64, 4) == [1]
    for size, cap, instances in [(100, 16, 3), (9, 64, 2), (1000, 64, 2)]:
        sizes = chunk_sizes(size, cap, instances)
        assert sum(sizes) == size and max(sizes) <= cap and max(sizes) - min(sizes) <= 1


def test_instances_run_batches_at_the_same_time_and_split_a_big_request():
    lock = threading.Lock()
    running, most, batches = 0, 0, []

    def run(inputs, outputs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
            batches.append(len(inputs["z"]))
        return {name: inputs["z"] for name in outputs}

    async def scenario():
        b = DynamicBatcher(
            run, ThreadPoolExecutor(2), model="m", max_batch_size=64, max_queue_delay_s=0.0,
            instances=2,
        )  # fmt: skip
        return await b.submit(z(64), ["out"])

    result = asyncio.run(scenario())
    np.testing.assert_array_equal(result["out"][:, 0], np.arange(64))  # rows back in order
    assert sorted(batches) == [32, 32] and most == 2


def test_plan_instances_defaults_to_one_single_threaded_instance_per_core(monkeypatch):
    from ganserve.service.backends import embedded

    monkeypatch.setattr(embedded, "usable_cores", lambda: 8)
    assert embedded.plan_instances(0, 0, on_gpu=False) == (8, 1)
    assert embedded.plan_instances(0, 2, on_gpu=False) == (4, 2)  # threads given: fill the cores
    assert embedded.plan_instances(2, 0, on_gpu=False) == (2, 4)
    assert embedded.plan_instances(0, 0, on_gpu=True) == (1, 8)
    assert embedded.plan_instances(3, 1, on_gpu=False) == (3, 1)


def test_a_second_instance_waits_for_enough_work_while_the_first_is_busy():
    recorder = Recorder(delay_s=0.1)

    async def scenario():
        b = DynamicBatcher(
            recorder.run, ThreadPoolExecutor(2), model="m", max_batch_size=64,
            max_queue_delay_s=0.0, instances=2,
        )  # fmt: skip
        first = asyncio.ensure_future(b.submit(z(1), ["out"]))
        while not recorder.started.is_set():
            await asyncio.sleep(0.005)
        trickle = [b.submit(z(1, start=i), ["out"]) for i in range(3)]  # under MIN_SPLIT_IMAGES
        await asyncio.gather(first, *trickle)
        many = [b.submit(z(1, start=i), ["out"]) for i in range(20)]  # enough for both instances
        await asyncio.gather(*many)

    asyncio.run(scenario())
    assert recorder.batches[:2] == [1, 3]  # the three single images ran as one batch
    assert sorted(recorder.batches[2:]) == [10, 10]  # twenty split over two free instances


def test_a_container_cpu_quota_caps_the_cores(tmp_path):
    from ganserve.service.backends.embedded import cgroup_cpu_limit

    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert cgroup_cpu_limit(((v2, None),)) == 1  # 1.5 CPUs: one instance, the rest for Python
    v2.write_text("max 100000\n")
    assert cgroup_cpu_limit(((v2, None),)) is None
    quota, period = tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us"
    quota.write_text("400000\n")
    period.write_text("100000\n")
    assert cgroup_cpu_limit(((tmp_path / "absent", None), (quota, period))) == 4
    quota.write_text("-1\n")
    assert cgroup_cpu_limit(((quota, period),)) is None


def test_a_closed_batcher_refuses_new_work_at_once():
    from ganserve.service.errors import BackendUnavailable

    async def scenario():
        b = batcher(Recorder(), max_batch_size=4, max_queue_delay_s=0.0)
        assert (await b.submit(z(2), ["out"]))["out"].shape == (2, 1)
        await b.close()
        with pytest.raises(BackendUnavailable, match="closed"):
            await b.submit(z(1), ["out"])

    asyncio.run(scenario())
