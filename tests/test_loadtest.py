"""`ganserve loadtest` against the real service; its counts must agree with the service's metrics."""

import json

from ganserve.cli import main
from tests.test_service_rpcs import _sample


def _delta(before: str, after: str, name: str, **labels) -> float:
    return _sample(after, name, **labels) - _sample(before, name, **labels)


def test_closed_loop_sweep_reports_and_agrees_with_prometheus(service, tmp_path, capsys):
    before = service.metrics_text()
    args = ["loadtest", "--address", service.address, "--model", "cgan", "--concurrency", "1,4",
            "--duration-s", "1", "--warmup-s", "0.3", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    after = service.metrics_text()
    assert report["mode"] == "closed" and [lv["concurrency"] for lv in report["levels"]] == [1, 4]
    for level in report["levels"]:
        assert level["codes"] == {"OK": level["requests"]} and level["rpc_per_s"] > 0
        latency = level["latency_ms"]
        assert (
            0
            < latency["p50"]
            <= latency["p90"]
            <= latency["p95"]
            <= latency["p99"]
            <= latency["max"]
        )
    # Every request the load generator sent is what the service counted, and timed.
    sent = report["sent_including_warmup"]
    assert _delta(before, after, "ganserve_requests_total", method="Generate", code="OK") == sent
    assert (
        _delta(before, after, "ganserve_request_latency_seconds_count", method="Generate") == sent
    )
    assert _delta(before, after, "ganserve_images_generated_total", model="cgan") == sent
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".png"]


def test_open_loop_rate_and_error_codes(service, tmp_path, capsys):
    before = service.metrics_text()
    args = ["loadtest", "--address", service.address, "--model", "gen2d", "--rate", "40", "--batch-size", "2000",
            "--duration-s", "1", "--warmup-s", "0", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    level = report["levels"][0]
    assert report["mode"] == "open" and level["requests"] == 40 and level["target_rate"] == 40
    assert level["codes"] == {"INVALID_ARGUMENT": 40}  # 2000 images per call is over the limit
    after = service.metrics_text()
    assert (
        _delta(before, after, "ganserve_requests_total", method="Generate", code="INVALID_ARGUMENT")
        == 40
    )


def test_interpolate_and_classmap_load(service, tmp_path, capsys):
    for rpc in ("interpolate", "classmap", "activations"):
        args = ["loadtest", "--address", service.address, "--model", "gen2d", "--rpc", rpc, "--concurrency", "2",
                "--duration-s", "0.5", "--warmup-s", "0", "--batch-size", "4", "--resolution", "8",
                "--out", str(tmp_path)]  # fmt: skip
        assert main(args) == 0
        level = json.loads(capsys.readouterr().out)["levels"][0]
        assert level["requests"] > 0 and set(level["codes"]) == {"OK"} and level["images_per_s"] > 0
