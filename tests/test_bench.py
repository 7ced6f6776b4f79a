"""The benchmark runs end to end and reports both pipelines (a smoke test: no timing is asserted)."""

import json


def test_bench_smoke(cli, data_dir, tmp_path):
    out = tmp_path / "bench.json"
    result = cli(["bench", "configs/step7_lr_scheduler.yaml", "--device", "cpu", "--data-dir", data_dir,
                  "--repeats", "1", "--json", out,
                  "--set", "data.train_subset=3000", "--set", "data.test_subset=500"])
    assert result.returncode == 0, result.stderr
    assert "mnist-drill" in result.stdout and "classic" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["train_images"] == 3000 and figures["test_images"] == 500
    assert figures["params"] == 7496 and figures["device"] == "cpu"
    for key in ("ours_train_img_s", "classic_train_img_s", "ours_test_img_s", "classic_test_img_s"):
        assert figures[key] > 0
    assert abs(figures["train_ratio"] - figures["ours_train_img_s"] / figures["classic_train_img_s"]) < 1e-9


def test_bench_rejects_zero_repeats(cli, data_dir):
    result = cli(["bench", "configs/step7_lr_scheduler.yaml", "--device", "cpu", "--data-dir", data_dir,
                  "--repeats", "0"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "--repeats" in result.stderr
