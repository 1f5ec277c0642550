"""benchmarks/experiment_time.py: the projected training time of an experiment's command and its floor,
on Hinton's default command, probed for two epochs per run on a small MNIST-format directory."""

import itertools
import pathlib
import re
import subprocess
import sys

import pytest
from idx_files import write_mnist_like

from jdistill.data.mnist import load_mnist_dir

ROOT = pathlib.Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "experiment_time.py"
LINE = re.compile(
    r"^(?P<name>\S+) epochs=(?P<epochs>\d+) rounds/epoch=(?P<rounds>\d+) s/epoch=(?P<seconds>[\d.]+) "
    r"projected=(?P<projected>[\d.]+) min GFLOP/round=(?P<gflop>[\d.]+) floor=(?P<floor>[\d.]+) min$",
    re.MULTILINE,
)


def mlp_round_gflop(widths: list[int], batch: int) -> float:
    """Matrix-product FLOPs of one SGD step of an MLP: forward and weight gradients 2 m n k each
    per layer, input gradients for every layer but the first."""
    layers = list(itertools.pairwise(widths))
    products = 2 * sum(a * b for a, b in layers) + sum(a * b for a, b in layers[1:])
    return 2 * batch * products / 1e9


def benchmark(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.slow
def test_every_run_of_the_command_is_costed_from_its_own_rounds(tmp_path):
    data_dir = write_mnist_like(tmp_path)
    train = len(load_mnist_dir(str(data_dir)).y_train)
    experiment = ["experiments/hinton_mnist.py", "--data-dir", str(data_dir), "--schedule", "default",
                  "--seeds", "1", "--sweep-seeds", "0", "--no-omitted-threes"]  # fmt: skip
    done = benchmark("--probe-epochs", "2", *experiment)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {m["name"]: m for m in LINE.finditer(done.stdout)}
    assert list(runs) == ["teacher", "alone/seed0", "kd_T20/seed0"], done.stdout
    assert [int(runs[n]["epochs"]) for n in runs] == [900, 80, 80]
    # the last partial batch is dropped: teacher batch 100, students 128
    assert [int(runs[n]["rounds"]) for n in runs] == [train // 100, train // 128, train // 128]
    # XLA's count is the products' plus a few per cent of element-wise work; the distilled student
    # reads its teacher's outputs from the table computed once (a teacher forward would add 75 %)
    expected = {"teacher": mlp_round_gflop([784, 1200, 1200, 10], 100),
                "alone/seed0": mlp_round_gflop([784, 800, 800, 10], 128),
                "kd_T20/seed0": mlp_round_gflop([784, 800, 800, 10], 128)}  # fmt: skip
    for name, gflop in expected.items():
        assert gflop <= float(runs[name]["gflop"]) <= 1.05 * gflop, (name, runs[name]["gflop"], gflop)
    teacher = runs["teacher"]
    assert float(teacher["projected"]) == pytest.approx(
        float(teacher["seconds"]) * 900 / 60, abs=0.3
    )  # rounding
    rates = re.search(
        r"^rate float32 products 100x1200x1200=(\d+) 1200x100x1200=(\d+) GFLOP/s$", done.stdout, re.MULTILINE
    )
    assert rates, done.stdout
    floor_minutes = (
        float(teacher["gflop"]) * int(teacher["rounds"]) * 900 / max(map(int, rates.groups())) / 60
    )
    assert float(teacher["floor"]) == pytest.approx(floor_minutes, rel=0.02, abs=0.05)
    total = re.search(
        r"^total projected=([\d.]+) h floor=([\d.]+) h \(3 runs, cpu", done.stdout, re.MULTILINE
    )
    assert total, done.stdout
    assert float(total[1]) * 60 == pytest.approx(sum(float(r["projected"]) for r in runs.values()), abs=0.6)
    assert float(total[2]) <= float(total[1])  # nothing trains faster than its products


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["experiments/none.py"], "experiment_time.py: no experiment script at experiments/none.py"),
        (["experiments/hinton_mnist.py", "--seeds", "1", "1"],
         "experiment_time.py: error: --seeds: a count of at least 1 or distinct seeds >= 0, got 1 1"),
        (["--probe-epochs", "1", "experiments/hinton_mnist.py"],
         "experiment_time.py: --probe-epochs must be at least 2 (the first compiles)"),
    ],
    ids=["no script", "bad experiment option", "one probe epoch"],
)  # fmt: skip
def test_bad_input_is_one_line(args, message):
    done = benchmark(*args)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == message, done.stderr
