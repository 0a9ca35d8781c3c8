"""End-to-end training through the real CLI on tiny data the tests make."""

import csv
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from ganserve.cli import main
from ganserve.training.checkpoint import load_checkpoint
from ganserve.training.monitor import BalanceWatch, CollapseWatch

FAST = ["--width", "0.25", "--epochs", "1", "--batch-size", "64", "--progress", "false"]


def train(out, data, *extra):
    assert main(["train", "--data", str(data), "--out", str(out), *FAST, *extra]) == 0
    return out / "checkpoints" / "last.pt"


PROJECTION = ["--family", "dcgan", "--conditional", "true", "--d-conditioning", "projection"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--family", "mlp", "--latent-dim", "100", "--activation", "relu"],
        ["--family", "mlp", "--conditional", "true", "--latent-dim", "4"],
        ["--family", "dcgan", "--latent-dim", "2", "--activation", "prelu", "--loss", "hinge"],
        ["--family", "dcgan", "--conditional", "true", "--latent-dim", "3", "--ema-decay", "0.99"],
        PROJECTION,
        [*PROJECTION, "--d-spectral-norm", "true", "--loss", "hinge"],
        [*PROJECTION, "--d-minibatch-std", "4"],
        [*PROJECTION, "--g-conditioning", "batchnorm", "--ema-decay", "0.99"],
        [*PROJECTION, "--g-conditioning", "both", "--g-full-res-channels", "32"],
    ],
    ids=[
        "mlp",
        "mlp-conditional",
        "dcgan-2d-hinge",
        "dcgan-conditional-ema",
        "dcgan-projection",
        "dcgan-projection-sn-hinge",
        "dcgan-projection-minibatch-std",
        "dcgan-projection-conditional-batchnorm-ema",
        "dcgan-projection-both-full-resolution",
    ],
)
def test_one_epoch_of_each_family_on_idx_data(tmp_path, idx_dir, flags):
    ckpt_path = train(tmp_path, idx_dir, *flags, "--weak-ic-every", "0")
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.kind == "gan" and ckpt.epoch == 1
    assert ckpt.data_info.train_images == 256 and ckpt.model.image_size == 28
    grid = Image.open(tmp_path / "grids" / "epoch_0001.png")
    tile = 28 + 2
    if ckpt.model.conditional:  # one row per class, 8 fixed latents per row
        assert grid.size == (8 * tile + 2, 10 * tile + 2)
    else:  # the studies' 4×4 grid of fixed latent points
        assert grid.size == (4 * tile + 2, 4 * tile + 2)
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"] and float(rows[0]["d_loss"]) > 0
    z = torch.zeros(2, ckpt.model.latent_dim)
    labels = torch.tensor([0, 1]) if ckpt.model.conditional else None
    assert ckpt.generator()(z, labels).shape == (2, 1, 28, 28)


def test_rgb_dcgan_trains_on_an_image_folder(tmp_path, rgb_folder):
    ckpt = load_checkpoint(
        train(
            tmp_path, rgb_folder, "--family", "dcgan-rgb", "--image-size", "32", "--latent-dim", "8"
        )
    )
    assert (ckpt.model.channels, ckpt.model.image_size, ckpt.model.num_classes) == (3, 32, 2)
    assert Image.open(tmp_path / "grids" / "epoch_0001.png").mode == "RGB"


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "d_flags",
    [[], ["--d-conditioning", "projection", "--d-spectral-norm", "true"]],
    ids=["concat", "projection-spectral-norm"],  # the power iteration's vectors resume too
)
def test_resume_continues_bit_identically(tmp_path, idx_dir, d_flags):
    flags = [*d_flags, "--data", str(idx_dir), "--family", "dcgan", "--conditional", "true", "--latent-dim", "3",
             "--width", "0.25", "--batch-size", "64", "--ema-decay", "0.9", "--checkpoint-every", "1",
             "--weak-ic-every", "1", "--subset", "128", "--progress", "false"]  # fmt: skip
    straight = tmp_path / "straight"
    assert main(["train", "--out", str(straight), "--epochs", "2", *flags]) == 0
    resumed = tmp_path / "resumed"
    assert main(["train", "--out", str(resumed), "--epochs", "1", *flags]) == 0
    assert main(["train", "--resume", str(resumed / "checkpoints" / "epoch_0001.pt"), "--epochs", "2",
                 "--out", str(resumed), "--progress", "false"]) == 0  # fmt: skip
    a = load_checkpoint(straight / "checkpoints" / "last.pt").raw
    b = load_checkpoint(resumed / "checkpoints" / "last.pt").raw
    assert a["epoch"] == b["epoch"] == 2
    for part in ("generator", "discriminator", "ema"):
        assert _states_equal(a[part], b[part]), part
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    history = list(csv.DictReader((resumed / "history.csv").open()))
    assert [r["epoch"] for r in history] == ["1", "2"]  # no duplicated rows after resume
    straight_rows = list(csv.DictReader((straight / "history.csv").open()))
    assert history[1]["d_loss"] == straight_rows[1]["d_loss"]


def test_a_gpu_checkpoint_resumes_on_a_machine_without_one(tmp_path, idx_dir):
    """A checkpoint written on a GPU carries the GPU's random state and tensors that lived there;
    a CPU machine resumes it (the GPU state is kept for a GPU, not restored here)."""
    out = tmp_path / "run"
    train(out, idx_dir, "--family", "dcgan", "--latent-dim", "2", "--weak-ic-every", "0",
          "--subset", "64", "--checkpoint-every", "1")  # fmt: skip
    raw = torch.load(out / "checkpoints" / "epoch_0001.pt", weights_only=False)
    raw["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as torch.cuda.get_rng_state_all()
    gpu_made = tmp_path / "from_gpu.pt"
    torch.save(raw, gpu_made)
    assert main(["train", "--resume", str(gpu_made), "--epochs", "2", "--out", str(out),
                 "--progress", "false"]) == 0  # fmt: skip
    assert load_checkpoint(out / "checkpoints" / "last.pt").epoch == 2


DECAY_FROM_EPOCH_1 = ["--lr-decay-start", "1"]


def _straight_and_added_on_resume(
    tmp_path, flags: list[str], added: list[str] = DECAY_FROM_EPOCH_1, epochs: int = 3
) -> tuple[dict, dict]:
    """Checkpoints after ``epochs`` epochs: one run with ``added`` (settings that act from epoch
    1, by default the rate falling from there) from the start, and one trained a first epoch
    without them, then resumed with them added (``tmp_path/resumed``)."""
    straight = tmp_path / "straight"
    assert main(["train", "--out", str(straight), "--epochs", str(epochs), *added, *flags]) == 0
    resumed = tmp_path / "resumed"
    assert main(["train", "--out", str(resumed), "--epochs", "1", *flags]) == 0
    assert main(["train", "--resume", str(resumed / "checkpoints" / "epoch_0001.pt"),
                 "--epochs", str(epochs), *added, "--out", str(resumed), "--progress", "false"]) == 0  # fmt: skip
    return (
        load_checkpoint(straight / "checkpoints" / "last.pt").raw,
        load_checkpoint(resumed / "checkpoints" / "last.pt").raw,
    )


def test_learning_rate_decay_is_resumed_exactly_and_may_be_added_on_resume(tmp_path, idx_dir):
    flags = ["--data", str(idx_dir), "--family", "dcgan", "--latent-dim", "2", "--width", "0.25",
             "--batch-size", "64", "--checkpoint-every", "1", "--weak-ic-every", "0",
             "--subset", "128", "--progress", "false"]  # fmt: skip
    a, b = _straight_and_added_on_resume(tmp_path, flags)
    for part in ("generator", "discriminator"):
        assert _states_equal(a[part], b[part]), part
    # The rate of the last epoch trained: 2e-4 from epoch 1 falling to lr/2 in the last of 2.
    assert a["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert b["opt_d"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    constant = tmp_path / "constant"
    assert main(["train", "--out", str(constant), "--epochs", "3", *flags]) == 0
    c = load_checkpoint(constant / "checkpoints" / "last.pt").raw
    assert c["opt_g"]["param_groups"][0]["lr"] == pytest.approx(2e-4)
    assert not _states_equal(a["generator"], c["generator"])  # the decay changed the run
    assert a["config"]["train"]["lr_decay_start"] == 1
    # Resumed mid-decay without repeating the flag: the saved schedule goes on.
    again = tmp_path / "again"
    assert (
        main(["train", "--out", str(again), "--epochs", "3", "--lr-decay-start", "1", *flags]) == 0
    )
    assert main(["train", "--resume", str(again / "checkpoints" / "epoch_0002.pt"), "--epochs", "3",
                 "--out", str(again), "--progress", "false"]) == 0  # fmt: skip
    d = load_checkpoint(again / "checkpoints" / "last.pt").raw
    assert _states_equal(a["generator"], d["generator"])
    # A course lengthened after its decay ran would change the rates epochs 2 and 3 were trained
    # at (the last at lr/2 of three epochs): refused up front, nothing written.
    refused = tmp_path / "refused"
    for changed in (["--epochs", "4"], ["--epochs", "5", "--lr-decay-start", "3"]):
        with pytest.raises(ValueError, match="learning rates of the 3 epochs trained"):
            main(["train", "--resume", str(again / "checkpoints" / "last.pt"), *changed,
                  "--out", str(refused), "--progress", "false"])  # fmt: skip
    assert not refused.exists()


def test_mode_seeking_term_pushes_pairs_apart_in_proportion_to_their_latents():
    from ganserve.training.trainer import mode_seeking_loss

    z = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # one pair: latents 1 apart per coordinate
    same = torch.ones(2, 1, 4, 4)
    assert mode_seeking_loss(same, z) == pytest.approx(1e5)  # one picture: the largest loss
    apart = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.5)])
    assert mode_seeking_loss(apart, z) == pytest.approx(2.0, rel=1e-4)  # 1 / (0.5 / 1)
    # G lowers it by spreading its images: a few steps on the term alone move a pair apart.
    torch.manual_seed(0)
    g = torch.nn.Linear(2, 16)
    latents = torch.rand(8, 2)
    before = (g(latents[:4]) - g(latents[4:])).abs().mean().item()
    optimizer = torch.optim.SGD(g.parameters(), lr=0.05)
    for _ in range(40):
        optimizer.zero_grad()
        mode_seeking_loss(g(latents), latents).backward()
        optimizer.step()
    assert (g(latents[:4]) - g(latents[4:])).abs().mean().item() > 1.5 * before


def test_mode_seeking_may_be_switched_on_at_a_resume_and_equals_a_straight_run(tmp_path, idx_dir):
    flags = ["--data", str(idx_dir), "--family", "dcgan", "--conditional", "true", "--latent-dim", "8",
             "--width", "0.25", "--batch-size", "63", "--checkpoint-every", "1", "--weak-ic-every", "0",
             "--subset", "128", "--progress", "false"]  # fmt: skip
    seeking = ["--mode-seeking", "1", "--mode-seeking-start", "1"]
    a, b = _straight_and_added_on_resume(tmp_path, flags, added=seeking, epochs=2)
    assert _states_equal(a["generator"], b["generator"])
    assert b["config"]["train"]["mode_seeking"] == 1.0
    plain = tmp_path / "plain"
    assert main(["train", "--out", str(plain), "--epochs", "2", *flags]) == 0
    c = load_checkpoint(plain / "checkpoints" / "last.pt").raw
    assert not _states_equal(a["generator"], c["generator"])  # the term changed epoch 2
    # Switching it on for an epoch already trained would rewrite history: refused.
    with pytest.raises(ValueError, match="mode-seeking-start"):
        main(["train", "--resume", str(tmp_path / "resumed" / "checkpoints" / "epoch_0001.pt"),
              "--epochs", "2", "--mode-seeking", "1",
              "--out", str(tmp_path / "refused"), "--progress", "false"])  # fmt: skip


def test_mode_seeking_pairs_share_their_labels(tmp_path, idx_dir):
    from ganserve.training.config import DataConfig, ModelConfig, TrainConfig
    from ganserve.training.data import load_data
    from ganserve.training.trainer import GANTrainer

    data = DataConfig(data=str(idx_dir), subset=64)
    model = ModelConfig(conditional=True, latent_dim=4, width=0.25)
    trainer = GANTrainer(model, data, TrainConfig(out=str(tmp_path)), load_data(data))
    z, labels = trainer._sample_inputs(9, torch.Generator().manual_seed(0), paired=True)
    assert z.shape == (9, 4) and torch.equal(labels[:4], labels[4:8])
    assert not torch.equal(z[:4], z[4:8])
    with pytest.raises(ValueError, match="mode-seeking"):  # a negative weight rewards collapse
        GANTrainer(model, data, TrainConfig(out=str(tmp_path), mode_seeking=-1), load_data(data))


def test_learning_rate_decay_must_start_inside_the_run(tmp_path, idx_dir):
    with pytest.raises(ValueError, match="lr-decay-start"):
        train(tmp_path, idx_dir, "--family", "dcgan", "--latent-dim", "2", "--lr-decay-start", "1")


def test_classifier_with_augmentation_and_decay_resumes_bit_identically(tmp_path, idx_dir):
    flags = ["--data", str(idx_dir), "--family", "classifier", "--classifier-arch", "vgg",
             "--augment", "--width", "0.25", "--batch-size", "64", "--checkpoint-every", "1",
             "--subset", "128", "--progress", "false"]  # fmt: skip
    a, b = _straight_and_added_on_resume(tmp_path, flags)
    assert _states_equal(a["classifier"], b["classifier"])
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-4)  # 1e-3 / 2, last of 2
    plain = tmp_path / "plain"
    no_augment = [f for f in flags if f != "--augment"]
    assert main(["train", "--out", str(plain), "--epochs", "3", "--lr-decay-start", "1",
                 *no_augment]) == 0  # fmt: skip
    c = load_checkpoint(plain / "checkpoints" / "last.pt").raw
    assert not _states_equal(a["classifier"], c["classifier"])  # the augmentation changed the run


def test_augmentation_is_refused_for_a_gan(tmp_path, idx_dir):
    with pytest.raises(ValueError, match="--augment"):
        train(tmp_path, idx_dir, "--family", "dcgan", "--latent-dim", "2", "--augment")


def test_same_seed_same_run_other_seed_other_run(tmp_path, idx_dir):
    flags = ["--family", "dcgan", "--latent-dim", "2", "--weak-ic-every", "0", "--subset", "64"]
    a = load_checkpoint(train(tmp_path / "a", idx_dir, *flags)).raw["generator"]
    b = load_checkpoint(train(tmp_path / "b", idx_dir, *flags)).raw["generator"]
    c = load_checkpoint(train(tmp_path / "c", idx_dir, *flags, "--seed", "1")).raw["generator"]
    assert _states_equal(a, b)
    assert not _states_equal(a, c)


def test_classifier_then_evaluate_writes_metrics_json(tmp_path, idx_dir, capsys, monkeypatch):
    classifier = train(tmp_path / "cls", idx_dir, "--family", "classifier", "--epochs", "3")
    assert load_checkpoint(classifier).metrics["test_accuracy"] > 0.5  # the bars are easy to learn
    # A classifier's report says per class what a generator judged by it can reach.
    judged = tmp_path / "classifier.json"
    assert main(["evaluate", str(classifier), "--out", str(judged)]) == 0
    own = json.loads(judged.read_text())
    rows = own["per_class"]
    assert len(rows) == 10 and own["test_accuracy"] > 0.5
    assert own["recognised_diversity_min"] == min(
        r["recognised_diversity"] or 0 for r in rows.values()
    )
    assert all(0 <= r["accuracy"] <= 1 and r["real_halves_diversity"] > 0 for r in rows.values())
    gan = train(tmp_path / "gan", idx_dir, "--family", "dcgan", "--conditional", "true", "--latent-dim", "3",
                "--weak-ic-every", "0", "--epochs", "2", "--checkpoint-every", "1",
                "--ema-decay", "0.9")  # fmt: skip
    # Evaluation takes the device training would (the GPU when usable) and the IC trains there.
    from ganserve.training import evaluate as evaluate_module

    chosen, ic_devices = [], []
    monkeypatch.setattr(
        evaluate_module,
        "single_process_device",
        lambda: chosen.append(torch.device("cpu")) or chosen[-1],
    )
    real_ic = evaluate_module.independent_classifier_test

    def spy_ic(*args, **kwargs):
        ic_devices.append(kwargs.get("device"))
        return real_ic(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "independent_classifier_test", spy_ic)
    from ganserve.training import mode_bins

    monkeypatch.setattr(mode_bins, "MIN_PER_BIN", 3)  # ~6 test images a class here: two bins each
    out, figure = tmp_path / "metrics.json", tmp_path / "bins.png"
    assert (
        main(
            [
                "evaluate",
                str(gan),
                "--classifier",
                str(classifier),
                "--ic",
                "weak",
                "--ic-repeats",
                "2",
                "--out",
                str(out),
                "--bins-figure",
                str(figure),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert len(chosen) == 1 and ic_devices == [chosen[0]] * 2
    ic = report["independent_classifier"]
    assert len(ic["errors"]) == 2 and ic["error"] == pytest.approx(sum(ic["errors"]) / 2)
    assert 0.0 <= ic["error"] <= 0.5
    fd = report["frechet_distance"]
    assert fd["generated_vs_test"] > fd["real_train_vs_test"] >= 0  # one epoch is far from real
    assert fd["ratio"] == pytest.approx(fd["generated_vs_test"] / fd["real_train_vs_test"])
    assert 0.0 <= report["class_consistency"] <= 1.0
    per_class = report["class_consistency_per_class"]
    assert len(per_class) == 10 and all(
        0.0 <= row["generated"] <= 1.0 and 0.0 <= row["classifier_on_real"] <= 1.0
        for row in per_class.values()
    )
    shares = [row["generated"] for row in per_class.values()]  # ten equal groups of requests
    assert report["class_consistency"] == pytest.approx(sum(shares) / len(shares), abs=0.01)
    diversity = report["within_class_diversity"]
    assert diversity["classes_from"] == "requested labels"
    for space in ("features", "pixels"):
        per_class = diversity[space]["per_class"]
        assert len(per_class) == 10 and diversity[space]["min"] == min(per_class.values()) > 0
    manifold = report["manifold"]  # generated vs real, beside two real samples of the same size
    assert set(manifold) == {"generated", "real_vs_real"}
    assert all(len(m["per_class"]) == 10 and m["nearest_k"] == 5 for m in manifold.values())
    bins = report["mode_bins"]  # NDB: generated vs real, beside a second real sample
    assert set(bins) == {"generated", "real_vs_real"}
    for side in bins.values():
        rows = [row for row in side["per_class"].values() if row is not None]
        assert len(side["per_class"]) == 10 and rows
        assert side["bins"] == sum(row["bins"] for row in rows)
        assert side["different_bins"] == sum(row["different_bins"] for row in rows)
        assert all(row["too_few"] + row["too_many"] == row["different_bins"] for row in rows)
    binned = [row for row in bins["generated"]["per_class"].values() if row is not None]
    with Image.open(figure) as drawn:  # a row for each class with bins: 2 x 8 tiles and a gap
        assert drawn.width == 2 + 17 * (28 + 2)
        assert drawn.height == 2 + len(binned) * (28 + 2)
    truncation = report["truncation"]  # the psi sweep, same seeds at every psi
    assert [row["psi"] for row in truncation["psis"]] == [1.0, 0.7, 0.5, 0.3]
    assert truncation["psis"][0]["variety"] > truncation["psis"][-1]["variety"] > 0
    assert truncation["typical_when_truncated"] == (
        truncation["psis"][-1]["confidence"] >= truncation["psis"][0]["confidence"]
    )

    # Selection scores both epochs with raw and EMA weights and keeps the best one.
    assert main(["select", str(tmp_path / "gan"), "--classifier", str(classifier),
                 "--samples", "64", "--min-diversity", "0"]) == 0  # fmt: skip
    selection = json.loads((tmp_path / "gan" / "selection.json").read_text())
    assert {(r["epoch"], r["weights"]) for r in selection["candidates"]} == {
        (1, "raw"),
        (1, "ema"),
        (2, "raw"),
        (2, "ema"),
    }
    best = selection["selected"]
    assert best["fd_ratio"] == min(r["fd_ratio"] for r in selection["candidates"])
    selected = load_checkpoint(tmp_path / "gan" / "checkpoints" / "selected.pt")
    assert (selected.epoch, selected.serve_weights) == (best["epoch"], best["weights"])
    assert sum(report["class_histogram"].values()) == pytest.approx(1.0)

    # From a later epoch on, the earlier checkpoints are not scored.
    assert main(["select", str(tmp_path / "gan"), "--classifier", str(classifier),
                 "--samples", "64", "--min-diversity", "0", "--from-epoch", "2"]) == 0  # fmt: skip
    selection = json.loads((tmp_path / "gan" / "selection.json").read_text())
    assert {r["epoch"] for r in selection["candidates"]} == {2}
    assert main(["select", str(tmp_path / "gan"), "--classifier", str(classifier),
                 "--from-epoch", "3"]) == 2  # fmt: skip


def test_cli_reports_a_missing_data_set_without_traceback(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err


SERVING_ONLY = ("grpc", "tritonclient", "onnx", "onnxruntime", "google.protobuf", "aiohttp")


def test_training_runs_where_only_the_training_packages_are(tmp_path, idx_dir):
    """A GPU training machine may have torch but not grpcio, tritonclient or onnx: `ganserve train`
    and `ganserve evaluate` of a checkpoint work there, and a command that needs the missing
    packages says which instead of crashing."""
    blocked = (
        "import sys\n"
        f"for name in {SERVING_ONLY!r}: sys.modules[name] = None\n"
        "from ganserve.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-c", blocked, *args], capture_output=True, text=True, timeout=300
    )
    trained = run("train", "--data", str(idx_dir), "--out", str(tmp_path / "gan"), *FAST,
                  "--subset", "64", "--weak-ic-every", "0")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    last = tmp_path / "gan" / "checkpoints" / "last.pt"
    assert load_checkpoint(last).epoch == 1
    scored = run("evaluate", str(last), "--ic", "none", "--samples", "64",
                 "--out", str(tmp_path / "scores.json"))  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    assert json.loads((tmp_path / "scores.json").read_text())["samples"] == 64
    refused = run("loadtest", "--model", "x")
    assert refused.returncode == 2
    assert "needs the grpc package" in refused.stderr and "Traceback" not in refused.stderr


def test_config_values_come_from_environment_variables(tmp_path, idx_dir, monkeypatch):
    monkeypatch.setenv("GANSERVE_LATENT_DIM", "5")
    monkeypatch.setenv("GANSERVE_FAMILY", "mlp")
    ckpt = load_checkpoint(train(tmp_path, idx_dir, "--weak-ic-every", "0", "--subset", "64"))
    assert ckpt.model.latent_dim == 5 and ckpt.model.family.value == "mlp"


def test_balance_watch_warns_only_after_patience():
    watch = BalanceWatch((0.3, 0.9), patience=3)
    assert watch.update(1, 0.05, 5.0) is None
    assert watch.update(2, 0.05, 5.0) is None
    message = watch.update(3, 0.05, 5.0)
    assert message and "discriminator is winning" in message
    assert watch.update(4, 0.6, 1.0) is None and watch.streak == 0


def test_collapse_watch_stops_only_after_patience_epochs_in_a_row(caplog):
    watch = CollapseWatch(0.5, patience=3)
    assert not watch.update(1, 0.3, 5) and not watch.update(2, 0.4, 5)
    assert not watch.update(3, 0.6, 5) and watch.streak == 0  # an early dip that came back
    assert not watch.update(4, 0.1, 8) and not watch.update(5, 0.1, 8)
    assert watch.update(6, 0.1, 8) and watch.streak == 3
    warnings = [r.message for r in caplog.records if "ignoring its latent" in r.message]
    assert len(warnings) == 5 and "(class 8)" in warnings[-1]
    assert "3 epochs in a row" in warnings[-1]
    never = CollapseWatch(0.5, patience=0)
    assert not any(never.update(epoch, 0.0, 0) for epoch in range(1, 50))


def test_a_collapsed_run_stops_keeps_its_checkpoint_and_resumes(tmp_path, idx_dir, capsys):
    """A class below the bound for --stop-on-collapse epochs ends the run with exit 3 and its last
    epoch saved (even between --checkpoint-every), the streak carried by the checkpoint."""
    flags = [
        "train", "--data", str(idx_dir), "--out", str(tmp_path), *FAST, "--subset", "128",
        "--family", "dcgan", "--conditional", "true", "--latent-dim", "8", "--weak-ic-every", "0",
        "--checkpoint-every", "5", "--diversity-warning", "2.0",  # a bound no generator reaches
    ]  # fmt: skip
    assert main([*flags, "--epochs", "4", "--stop-on-collapse", "2"]) == 3
    assert "stopped after epoch 2" in capsys.readouterr().err
    stopped = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert stopped.epoch == 2 and stopped.raw["collapse_streak"] == 2
    assert (tmp_path / "checkpoints" / "epoch_0002.pt").exists()
    assert len(list(csv.DictReader((tmp_path / "history.csv").open()))) == 2
    resume = ["--resume", str(tmp_path / "checkpoints" / "epoch_0002.pt")]
    # The streak goes on from 2: a patience of 3 stops after one more epoch...
    assert main([*flags, *resume, "--epochs", "4", "--stop-on-collapse", "3"]) == 3
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt").epoch == 3
    # ...and 0 trains on regardless.
    assert main([*flags, *resume, "--epochs", "4", "--stop-on-collapse", "0"]) == 0
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt").epoch == 4


def test_ema_decay_warms_up_before_reaching_its_target():
    from ganserve.training.trainer import ema_decay_at

    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(0.91)
    assert ema_decay_at(100_000, 0.999) == 0.999


def test_ema_generator_samples_with_batch_norm_statistics_of_its_own_weights():
    """Copying the live G's running statistics onto averaged weights made eval-mode samples differ
    from what those weights produce with their own statistics (pre-BN variance off by 0.35–0.77)."""
    import copy

    from ganserve.training.config import Family, ModelConfig
    from ganserve.training.models import build_gan
    from ganserve.training.trainer import recompute_batchnorm_statistics, update_ema

    torch.manual_seed(0)
    g, _ = build_gan(ModelConfig(family=Family.DCGAN, latent_dim=8, width=0.25))
    ema = copy.deepcopy(g)
    optimizer = torch.optim.Adam(g.parameters(), lr=2e-3)
    target = torch.rand(1, 1, 28, 28) * 2 - 1
    for _ in range(40):  # the live weights move away from their average
        loss = (g(torch.rand(32, 8) * 2 - 1) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        update_ema(ema, g, 0.95)
    noise = torch.Generator().manual_seed(1)

    def sample():
        return (torch.rand(512, 8, generator=noise) * 2 - 1,)

    z = torch.rand(2048, 8) * 2 - 1
    with torch.no_grad():
        # What the averaged weights give with their own batch statistics (on a copy: a train-mode
        # forward updates the running statistics).
        own_statistics = copy.deepcopy(ema).train()(z)
        stale = copy.deepcopy(ema)
        for ema_b, b in zip(stale.buffers(), g.buffers(), strict=True):
            ema_b.copy_(b)  # the old behaviour: the live model's statistics
        stale_error = (stale.eval()(z) - own_statistics).abs().mean()
        recompute_batchnorm_statistics(ema, sample, batches=8)
        fixed_error = (ema.eval()(z) - own_statistics).abs().mean()
    assert fixed_error < 0.01 < 0.1 < stale_error  # measured: 0.001 against 0.24


def test_training_monitors_within_class_diversity_on_the_sampling_path(tmp_path, idx_dir, caplog):
    train(
        tmp_path, idx_dir, "--family", "dcgan", "--conditional", "true", "--latent-dim", "8",
        "--ema-decay", "0.99", "--weak-ic-every", "0", "--diversity-warning", "2.0",
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert 0.0 < float(rows[0]["diversity_min"]) <= float(rows[0]["diversity_mean"])
    # A bound no generator reaches (2× the real variety) must produce the collapse warning.
    assert any("ignoring its latent" in r.message for r in caplog.records)


def test_selection_prefers_variety_in_every_class_before_distance():
    from ganserve.training.selection import choose

    def row(epoch, fd, diversity, share=0.05):
        return {"epoch": epoch, "fd_ratio": fd, "diversity_min": diversity,
                "smallest_class_share": share}  # fmt: skip

    varied = [row(1, 90.0, 0.85), row(2, 80.0, 0.82), row(3, 50.0, 0.3)]
    assert choose(varied, 0.8)[1]["epoch"] == 2  # the bound met: lowest distance among those
    # None keeps 0.8 (a 2-D latent): the near-copies of one class (0.22) lose to 0.4 of variety.
    small = [row(28, 123.0, 0.22), row(25, 143.0, 0.40), row(20, 155.0, 0.41), row(19, 126.0, 0.13)]
    tier, best = choose(small, 0.8)
    assert best["epoch"] == 25 and "0.4" in tier
    absent = [row(5, 100.0, 0.0, share=0.0), row(6, 120.0, 0.0, share=0.01)]
    assert choose(absent, 0.8)[1]["epoch"] == 6  # every class at least present
    assert choose([row(7, 100.0, 0.0, share=0.0)], 0.8)[1]["epoch"] == 7
