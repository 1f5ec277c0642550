"""Host-streamed batches: DataSource's order, each process's slice of the global batch, per-example
transforms that depend on (seed, epoch, index) only, exact resumption from a saved state, and the
memory-mapped record store."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from test_image_folder import make_image_folder

from jdistill.data import Dataset
from jdistill.data.image_folder import ImageFolder, RandomResizedCrop, ResizeCenterCrop
from jdistill.data.records import ArraySource, RecordSource, write_record_chunks, write_records
from jdistill.data.streaming import BatchStream, eval_batches, example_rng
from jdistill.train.sources import DataSource


def toy_dataset(n: int = 37) -> Dataset:
    x = np.random.default_rng(0).random((n, 4, 4, 3), dtype=np.float32)
    y = (np.arange(n) % 5).astype(np.int32)
    return Dataset("toy", x, y, x[:4], y[:4], num_classes=5)


def batches(stream, count: int) -> list[dict]:
    with stream:
        return [next(stream) for _ in range(count)]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() == {"image", "label", "index"}
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def concat(parts: list[list[dict]]) -> list[dict]:
    return [{k: np.concatenate([p[r][k] for p in parts]) for k in p0} for r, p0 in enumerate(parts[0])]


def test_the_order_is_data_sources():
    data = toy_dataset()
    source = DataSource(data, 8)
    stream = BatchStream(ArraySource.training_set(data), 8, seed=3, epoch=1, threads=2)
    got = batches(stream, 3 * source.steps_per_epoch)  # epochs 1, 2 and 3 (4 rounds each)
    expected = np.concatenate([np.asarray(source.order(3, epoch)) for epoch in (1, 2, 3)])
    np.testing.assert_array_equal(np.stack([b["index"] for b in got]), expected)
    for batch in got:
        assert batch["index"].dtype == batch["label"].dtype == np.int32
        np.testing.assert_array_equal(batch["image"], data.x_train[batch["index"]])
        np.testing.assert_array_equal(batch["label"], data.y_train[batch["index"]])
    np.testing.assert_array_equal(stream.order(2), source.order(3, 2))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return ImageFolder(make_image_folder(tmp_path_factory.mktemp("images")))


def test_process_slices_make_the_global_batch(folder):
    crop = RandomResizedCrop(10)
    one = batches(BatchStream(folder, 4, seed=7, transform=crop, threads=0), 6)  # 2 epochs of 3 rounds
    two = [
        batches(BatchStream(folder, 4, seed=7, transform=crop, process_index=p, process_count=2), 6)
        for p in (0, 1)
    ]
    assert all(b["image"].shape == (2, 10, 10, 3) for b in two[0])
    assert_same(concat(two), one)
    assert one[0]["image"].shape == (4, 10, 10, 3) and one[0]["image"].dtype == np.uint8


def test_each_example_depends_on_seed_epoch_and_index_only(folder):
    crop = RandomResizedCrop(10)
    stream = BatchStream(folder, 4, seed=7, transform=crop, threads=3)
    got = batches(stream, 6)
    for r, batch in enumerate(got):
        epoch = r // 3
        for image, label, index in zip(batch["image"], batch["label"], batch["index"]):
            # an independent recomputation from the file and the example's own generator
            np.testing.assert_array_equal(
                image, crop(folder[index]["image"], example_rng(7, epoch, int(index)))
            )
            assert label == folder.labels[index]
    # the same example in two epochs is cropped differently
    first, second = (np.concatenate([b["index"] for b in got[e * 3 : e * 3 + 3]]) for e in (0, 1))
    index = int(first[0])
    a = got[0]["image"][0]
    b = np.concatenate([x["image"] for x in got[3:]])[list(second).index(index)]
    assert not np.array_equal(a, b)


def test_a_restored_state_continues_with_the_same_batches(folder):
    crop = RandomResizedCrop(10)
    uninterrupted = batches(BatchStream(folder, 4, seed=1, transform=crop), 8)
    for stop in (2, 3, 5):  # mid-epoch, at an epoch's end, mid-epoch of the next
        stream = BatchStream(folder, 4, seed=1, transform=crop)
        assert_same(batches(stream, stop), uninterrupted[:stop])
        state = json.loads(json.dumps(stream.get_state()))
        assert (state["epoch"], state["round"]) == divmod(stop, 3)
        resumed = BatchStream(folder, 4, seed=1, transform=crop, process_index=1, process_count=2, threads=1)
        resumed.set_state(state)
        other = BatchStream(folder, 4, seed=1, transform=crop, process_index=0, process_count=2, threads=0)
        other.set_state(state)
        assert_same(concat([batches(other, 8 - stop), batches(resumed, 8 - stop)]), uninterrupted[stop:])
    # set_state on a running stream rewinds it
    stream = BatchStream(folder, 4, seed=1, transform=crop)
    with stream:
        start = stream.get_state()
        next(stream), next(stream)
        stream.set_state(start)
        assert stream.position == (0, 0)
        taken = stream.take(2)
    assert taken["image"].shape == (2, 4, 10, 10, 3)
    np.testing.assert_array_equal(taken["index"][1], uninterrupted[1]["index"])


@pytest.mark.slow  # each worker process imports JAX: seconds before the first batch
def test_worker_processes_give_the_same_batches(folder):
    crop = RandomResizedCrop(10)
    expected = batches(BatchStream(folder, 4, seed=2, transform=crop, threads=0), 8)  # across 3 epochs
    assert_same(batches(BatchStream(folder, 4, seed=2, transform=crop, threads=1, workers=2), 8), expected)


def test_eval_batches_give_every_example_once_in_order(folder):
    crop = ResizeCenterCrop(8)
    one = list(eval_batches(folder, 10, transform=crop, threads=2))  # 12 examples: 2 batches, 8 padding
    assert [b["image"].shape for b in one] == [(10, 8, 8, 3)] * 2
    index, mask = (np.concatenate([b[k] for b in one]) for k in ("index", "mask"))
    np.testing.assert_array_equal(mask, np.repeat([1.0, 0.0], [12, 8]))
    np.testing.assert_array_equal(index[:12], np.arange(12))
    images, labels = (np.concatenate([b[k] for b in one]) for k in ("image", "label"))
    for i in range(12):
        np.testing.assert_array_equal(images[i], crop(folder[i]["image"]))
        assert labels[i] == folder.labels[i]
    parts = [list(eval_batches(folder, 10, transform=crop, process_index=p, process_count=2)) for p in (0, 1)]
    for whole, halves in zip(one, zip(*parts)):
        for name in whole:
            np.testing.assert_array_equal(whole[name], np.concatenate([h[name] for h in halves]))


def test_records_round_trip(tmp_path):
    data = toy_dataset()
    images = (data.x_train * 255).astype(np.uint8)
    path = write_records(tmp_path / "r", images, data.y_train, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    source = RecordSource(path)
    assert isinstance(source.images, np.memmap) and isinstance(source.labels, np.memmap)
    assert len(source) == 37 and source.image_shape == (4, 4, 3) and source.num_classes == 5
    assert source.mean == (0.5, 0.4, 0.3) and source.std == (0.2, 0.2, 0.2)
    for i in (0, 17, 36):
        np.testing.assert_array_equal(source[i]["image"], images[i])
        assert source[i]["label"] == data.y_train[i]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["count"] == 37 and manifest["image_shape"] == [4, 4, 3] and manifest["dtype"] == "|u1"
    assert len(pickle.dumps(source)) < 500  # pickles as its path: workers map the files themselves
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[5]["image"], images[5])
    # chunks from a generator, float images, a declared class count
    chunks = ((data.x_train[i : i + 10], data.y_train[i : i + 10]) for i in range(0, 37, 10))
    floats = RecordSource(write_record_chunks(tmp_path / "f", chunks, count=37, num_classes=9))
    assert floats.num_classes == 9 and floats.mean is None
    np.testing.assert_array_equal(floats.images, data.x_train)
    streamed = batches(BatchStream(floats, 8, seed=0), 4)
    assert_same(streamed, batches(BatchStream(ArraySource.training_set(data), 8, seed=0), 4))


def one_line(error) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 6, "process_count": 4}, "batch_size 6 is not a multiple of process_count 4"),
        ({"batch_size": 38}, r"batch_size 38 is larger than the data set \(37 examples\)"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"process_index": 2, "process_count": 2}, "process_index 2 is not below process_count 2"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"threads": -1}, "threads must be"),
    ],
)
def test_bad_streams_are_refused_in_one_line(kwargs, match):
    data = toy_dataset()
    with pytest.raises(ValueError, match=match) as error:
        BatchStream(ArraySource.training_set(data), **{"batch_size": 8, "seed": 0, **kwargs})
    one_line(error)


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda d: eval_batches(ArraySource.training_set(d), 6, process_count=4),
            "not a multiple of process_count",
        ),
        (
            lambda d: eval_batches(ArraySource.training_set(d), 4, process_index=2, process_count=2),
            "not below",
        ),
        (lambda d: ArraySource(d.x_train, d.y_train[:3]), "labels must be \\[N\\] beside images"),
        (lambda d: BatchStream(ArraySource(d.x_train[:0], d.y_train[:0]), 1, seed=0), "the source is empty"),
    ],
)
def test_bad_sources_and_eval_batches_are_refused_in_one_line(make, match):
    with pytest.raises(ValueError, match=match) as error:
        make(toy_dataset())
    one_line(error)


def test_bad_states_and_shapes_are_refused_in_one_line(folder):
    stream = BatchStream(folder, 4, seed=0)
    with pytest.raises(ValueError, match="seed 1 \\(this stream: 0\\)") as error:
        stream.set_state({**stream.get_state(), "seed": 1})
    one_line(error)
    with pytest.raises(ValueError, match="round 3") as error:
        stream.set_state({**stream.get_state(), "round": 3})
    one_line(error)
    with pytest.raises(ValueError, match="a batch needs one image shape") as error:
        batches(stream, 1)  # the files' own sizes differ: no transform to a fixed size
    one_line(error)


def test_bad_records_are_refused_in_one_line(tmp_path):
    x, y = np.zeros((6, 2, 2, 1), np.uint8), np.arange(6) % 2
    cases = [
        (lambda d: write_records(d, x, y[:5]), "6 images but 5 labels"),
        (lambda d: write_records(d, x[..., 0], y), "images must be uint8 or float"),
        (lambda d: write_records(d, x.astype(np.float32) * np.nan, y), "hold NaN or inf"),
        (
            lambda d: write_records(d, x, y, num_classes=1),
            r"labels from example 0 run 0..1, outside \[0, num_classes=1\)",
        ),
        (lambda d: write_records(d, x, y.astype(np.float32)), "labels must be integers"),
        (lambda d: write_records(d, x, y, std=(0.0,)), "std must be 1 values above 0"),
        (lambda d: write_record_chunks(d, [(x, y)], count=5), "more than count=5"),
        (lambda d: write_record_chunks(d, [(x, y)], count=7), "held 6 examples, not count=7"),
        (lambda d: write_record_chunks(d, [(x, y), (x[:, :1], y)], count=12), "images from example 6 are"),
        (lambda d: RecordSource(d), "no manifest.json"),
    ]
    for k, (make, match) in enumerate(cases):
        with pytest.raises(ValueError, match=match) as error:
            make(tmp_path / str(k))
        one_line(error)
    write_records(tmp_path / "done", x, y)
    with pytest.raises(ValueError, match="already holds records") as error:
        write_records(tmp_path / "done", x, y)
    one_line(error)
    assert not (tmp_path / "7" / "manifest.json").exists()  # an unfinished write stays unreadable


def test_without_grain_the_module_imports_and_a_stream_says_what_to_install():
    code = (
        "import sys; sys.modules['grain'] = None\n"
        "import numpy as np\n"
        "from jdistill.data.records import ArraySource\n"
        "from jdistill.data.streaming import BatchStream\n"
        "try:\n"
        "    BatchStream(ArraySource(np.zeros((4, 1, 1, 1)), np.zeros(4, int)), 2, seed=0)\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "streaming input needs grain: pip install grain\n"
