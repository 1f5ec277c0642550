"""experiments/teacher_recipe_parity.py: a data-free paper's teacher recipe trained by jdistill and by
PyTorch on the same arrays (the README's figures come from its full-MNIST run)."""

import json
import pathlib
import runpy

import pytest
from idx_files import write_mnist_like

pytest.importorskip("torch", reason="the parity tier needs PyTorch: pip install -e '.[parity]'")
pytestmark = pytest.mark.parity

SCRIPT = pathlib.Path(__file__).parents[2] / "experiments" / "teacher_recipe_parity.py"
parity = runpy.run_path(str(SCRIPT))


@pytest.mark.parametrize("method, epochs", [("dafl", 3), ("dfad", 10)])  # SGD 0.01 learns slower than Adam
def test_both_frameworks_learn_the_recipe_and_the_table_reports_them(method, epochs, tmp_path):
    (tmp_path / "mnist").mkdir()
    data = write_mnist_like(tmp_path / "mnist")
    argv = ["--data-dir", str(data), "--out", str(tmp_path / "out"), "--method", method, "--seeds", "0", "1"]
    results = parity["main"]([*argv, "--epochs", str(epochs)])
    for framework in ("jdistill", "pytorch"):
        for seed in ("0", "1"):
            accuracies = results[framework][seed]
            assert len(accuracies) == epochs
            assert accuracies[-1] > 0.4, (framework, seed, accuracies)  # chance: 0.1 on 397 test images
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["method"] == method and written["epochs"] == epochs
    assert written["jdistill"] == results["jdistill"] and written["pytorch"] == results["pytorch"]
    table = (tmp_path / "out" / "table.md").read_text()
    for framework in ("jdistill", "pytorch"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {framework} |"))
        cells = row.strip("|").split("|")
        assert [float(c) for c in cells[1:3]] == [round(100 * results[framework][s][-1], 2) for s in "01"]
    # Run again: jdistill's finished runs are read back, not trained again.
    again = parity["main"]([*argv, "--epochs", str(epochs)])
    assert again["jdistill"] == results["jdistill"]


def test_a_missing_data_directory_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        parity["main"](["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err


@pytest.mark.parametrize("method", ["dafl", "dfad"])
def test_from_the_same_weights_five_steps_of_the_recipe_agree_with_pytorch(method):
    """jdistill's LeNet-5, cross-entropy and optimizer (the recipe's, as the engine builds it)
    against the script's PyTorch network and ``torch.optim`` on the same five batches."""
    import jax
    import numpy as np
    import optax
    import torch
    from flax import nnx
    from relative_error import assert_close

    from jdistill.adversarial.data_free import paper_teacher
    from jdistill.losses.logits import cross_entropy
    from jdistill.models import create_model
    from jdistill.models.layers import torch_init

    model = torch_init(create_model("lenet5", (32, 32, 1), 10, rngs=nnx.Rngs(0)), nnx.Rngs(1))
    graphdef, params = nnx.split(model, nnx.Param)
    net = parity["torch_lenet5"]()
    to_torch = {  # jdistill's parameter -> the torch module and the array in its layout
        0: ("conv1", lambda k: k.transpose(3, 2, 0, 1)),  # HWIO -> OIHW
        3: ("conv2", lambda k: k.transpose(3, 2, 0, 1)),
        6: ("fc1", lambda k: k.reshape(5, 5, 16, 120).transpose(3, 2, 0, 1)),  # flattened (h, w, c)
        9: ("fc2", lambda k: k.T),
        11: ("head", lambda k: k.T),
    }

    with torch.no_grad():
        for index, (name, layout) in to_torch.items():
            net[index].weight.copy_(torch.from_numpy(np.array(layout(np.asarray(params[name]["kernel"])))))
            net[index].bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 64, 32, 32, 1)).astype(np.float32)
    labels = rng.integers(0, 10, size=(5, 64))
    as_torch = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    logits = lambda p, x: nnx.merge(graphdef, p)(x)[0]

    def same_logits(what, params, tolerance):
        want = net(as_torch(images[0])).detach()
        assert_close(f"{method}: {what}", logits(params, images[0]), want, tolerance, "torch")

    same_logits("LeNet-5 logits", params, 1e-5)

    tx = paper_teacher(method).optimizer.build(epochs=1, steps_per_epoch=5).transformation()
    loss = lambda p, x, y: cross_entropy(logits(p, x), y).mean()

    @jax.jit
    def step(params, state, x, y):
        updates, state = tx.update(jax.grad(loss)(params, x, y), state, params)
        return optax.apply_updates(params, updates), state

    start = {i: net[i].weight.detach().clone() for i in to_torch}
    state, optimizer = tx.init(params), parity["torch_optimizer"](net, method)
    for x, y in zip(images, labels):
        params, state = step(params, state, x, y)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(as_torch(x)), torch.from_numpy(y)).backward()
        optimizer.step()
    # What the steps changed, so the optimizer shows; Adam divides by the root of the mean squared
    # gradient, which magnifies float32 rounding where a gradient is tiny: up to 4e-4 here, 4e-5 for SGD.
    for index, (name, layout) in to_torch.items():
        assert_close(
            f"{method}: {name}, change over 5 steps",
            layout(np.asarray(params[name]["kernel"])) - start[index].numpy(),
            net[index].weight.detach() - start[index],
            1e-3,
            "torch",
        )
    same_logits("logits after 5 steps", params, 1e-4)
