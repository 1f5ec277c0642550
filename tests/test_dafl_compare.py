"""experiments/dafl_compare.py on small hand-made run directories of both frameworks."""

import json
import pathlib
import runpy

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "dafl_compare.py"
compare_script = runpy.run_path(str(SCRIPT))
main = compare_script["main"]


def jdistill_run(root: pathlib.Path, seed: int, accuracies: dict[int, float]) -> None:
    run = root / f"dafl_seed{seed}"
    run.mkdir(parents=True)
    lines = [{"epoch": 1, "stage": "train", "step": 50, "train/loss": 1.0}]  # no accuracy: skipped
    lines += [
        {"epoch": k, "stage": "test", "step": it, "test/accuracy": acc}
        for k, (it, acc) in enumerate(accuracies.items(), 1)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def reference_out(root: pathlib.Path, seeds: dict[int, dict[int, float]], init: str = "torch") -> None:
    root.mkdir(parents=True)
    results = {
        "settings": {"init": init},
        "seeds": {str(s): {"iteration": list(c), "accuracy": list(c.values())} for s, c in seeds.items()},
    }
    (root / "results.json").write_text(json.dumps(results))


def test_table_window_means_and_p_value(tmp_path, capsys):
    jd = tmp_path / "jd"
    jdistill_run(jd, 0, {100: 0.50, 200: 0.60, 300: 0.90})
    jdistill_run(jd, 1, {100: 0.54, 200: 0.64, 300: 0.90})
    jdistill_run(jd, 2, {100: 0.52})  # stopped early: left out
    reference_out(
        tmp_path / "ref", {0: {100: 0.60, 200: 0.70, 300: 0.90}, 1: {100: 0.62, 200: 0.72, 300: 0.90}}
    )
    out, picture = tmp_path / "report" / "compare.md", tmp_path / "plots" / "compare.png"
    assert main(["--runs", str(jd), "--against", str(tmp_path / "ref"), "--window", "100", "200",
                 "--out", str(out), "--plot", str(picture)]) == 0  # fmt: skip
    report = capsys.readouterr().out
    assert out.read_text() == report
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # columns: the window's evaluations; population std over seeds
    assert "| test accuracy (%) at iteration | 100 | 200 |" in report
    assert "| jdistill (2 seeds) | 52.0 +- 2.0 | 62.0 +- 2.0 |" in report
    assert "| PyTorch, the reference's loop (2 seeds) | 61.0 +- 1.0 | 71.0 +- 1.0 |" in report
    # each seed's mean over 100-200: jdistill 55, 59; reference 65, 67; difference 9 points, and the
    # observed split is the most extreme of the 6 (with its mirror): p = 2 / 6; resampled, the means
    # differ by 6 or by 12 with chance 1/16 each, the ends of the 95 % interval
    assert "seed 0 55.0, seed 1 59.0" in report and "seed 0 65.0, seed 1 67.0" in report
    assert (
        "the second minus the first, the means of those: +9.00 points (95 % bootstrap interval +6.00 to +12.00); "
        "two-sided permutation p = 0.333 (2 and 2 seeds, unpaired; exact, all 6 splits)"
    ) in report
    assert "jdistill: seed 2 left out, no evaluation at iteration 200" in report
    assert "iteration 100" not in report.split("- jdistill: seed 2")[1]


def test_chosen_columns_and_bad_input_are_one_line(tmp_path, capsys):
    jd, ref = tmp_path / "jd", tmp_path / "ref"
    jdistill_run(jd, 0, {100: 0.5, 200: 0.6})
    reference_out(ref, {0: {100: 0.6, 200: 0.7}})
    assert main(["--runs", str(jd), "--against", str(ref), "--iterations", "200"]) == 0
    assert "| test accuracy (%) at iteration | 200 |" in capsys.readouterr().out
    cases = [
        (["--runs", str(tmp_path / "none"), "--against", str(ref)], "neither a data_free_mnist.py output"),
        (["--runs", str(jd), str(ref), "--against", str(ref)], "compare them as two groups"),
        (["--runs", str(jd), str(jd), "--against", str(ref)], "seed 0 is in both"),
        (["--runs", str(jd), "--against", str(ref), "--iterations", "300"], "no run of jdistill has every iteration"),
        (["--runs", str(jd), "--against", str(ref), "--window", "300", "100"], "the first iteration is after the last"),
        (["--runs", str(jd), "--against", str(ref), "--window", "300", "400"], "no evaluation in iterations 300-400"),
    ]  # fmt: skip
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    cases.append(
        (
            ["--runs", str(jd), "--against", str(tmp_path / "bad")],
            "not a results.json of dafl_reference_torch.py",
        )
    )
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_groups_are_labelled_by_what_their_runs_are(tmp_path, capsys):
    torch_init, jdistill_init = tmp_path / "torch", tmp_path / "jdinit"
    reference_out(torch_init, {0: {100: 0.6}, 1: {100: 0.7}})
    reference_out(jdistill_init, {0: {100: 0.5}, 1: {100: 0.6}}, init="jdistill")
    assert main(["--runs", str(jdistill_init), "--against", str(torch_init)]) == 0
    report = capsys.readouterr().out
    assert "| PyTorch, the reference's loop from jdistill's first weights (2 seeds) | 55.0 +- 5.0 |" in report
    assert "| PyTorch, the reference's loop (2 seeds) | 65.0 +- 5.0 |" in report
    assert main(["--runs", str(torch_init), "--against", str(torch_init)]) == 0  # one kind twice: numbered
    report = capsys.readouterr().out
    assert "loop, group 1 (2 seeds)" in report and "loop, group 2 (2 seeds)" in report
    # one group against itself: no difference, and resampled means of 60, 65 or 70 a side
    assert (
        "+0.00 points (95 % bootstrap interval -10.00 to +10.00); two-sided permutation p = 1.000" in report
    )


def test_jdistill_seeds_in_numeric_order(tmp_path):
    for seed in (10, 9, 2):
        jdistill_run(tmp_path, seed, {100: 0.5})
    assert list(compare_script["jdistill_curves"](tmp_path)) == ["seed 2", "seed 9", "seed 10"]
