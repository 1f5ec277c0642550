"""Training on data streamed from disk (--dataset records, imagefolder): the metrics of the same
data held in memory, exact resumption, one-line refusals."""

import numpy as np
import pytest
from golden import forms
from test_image_folder import make_image_folder

from jdistill.data.records import write_records
from jdistill.train import RunConfig, RunDir, fit

pytest.importorskip("grain")
forms.register_tiny_models()
DATA = forms.tiny_data()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The tiny data set as record directories: float32 images, its normalisation."""
    root = tmp_path_factory.mktemp("records")
    for split, x, y in (("train", DATA.x_train, DATA.y_train), ("test", DATA.x_test, DATA.y_test)):
        write_records(root / split, x, y, num_classes=DATA.num_classes, mean=DATA.mean, std=DATA.std)
    return str(root)


def metrics_without_time(run) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in RunDir(run).metrics()]


@pytest.mark.slow
def test_a_streamed_run_has_the_metrics_of_the_same_data_in_memory(records, tmp_path):
    """Teacher training, then distillation with CRD's memory banks (which read every training
    label), with shifts and flips, on 4 devices."""
    teacher = forms.tiny_teacher_config().replace(max_shift=1, hflip=True)
    fit(teacher, tmp_path / "memory_teacher", dataset=DATA, progress=False)
    fit(teacher.replace(dataset="records", data_dir=records), tmp_path / "streamed_teacher", progress=False)
    assert metrics_without_time(tmp_path / "memory_teacher") == metrics_without_time(tmp_path / "streamed_teacher")
    student = RunConfig(model="golden_tiny_student", dataset="tiny", epochs=2, batch_size=16, max_shift=1,
                        methods=("ce", "kd", "crd"), teacher=str(tmp_path / "memory_teacher"))  # fmt: skip
    fit(student, tmp_path / "memory", dataset=DATA, progress=False)
    streamed = student.replace(dataset="records", data_dir=records, teacher=str(tmp_path / "streamed_teacher"))
    fit(streamed, tmp_path / "streamed", progress=False)
    memory, stream = metrics_without_time(tmp_path / "memory"), metrics_without_time(tmp_path / "streamed")
    assert len(memory) == len(stream) == 2
    for a, b in zip(memory, stream):
        assert a.keys() == b.keys()
        numbers = [k for k in a if isinstance(a[k], float)]
        np.testing.assert_allclose([a[k] for k in numbers], [b[k] for k in numbers], rtol=1e-6, atol=1e-7)
        assert {k: v for k, v in a.items() if k not in numbers} == {k: v for k, v in b.items() if k not in numbers}


@pytest.mark.slow
def test_a_resumed_streamed_run_continues_with_the_same_batches(records, tmp_path):
    config = forms.tiny_teacher_config().replace(dataset="records", data_dir=records, max_shift=1,
                                                 schedule="constant", epochs=3)  # fmt: skip
    fit(config.replace(epochs=1), tmp_path / "resumed", progress=False)
    fit(config, tmp_path / "resumed", progress=False)  # extended: resumes from epoch 1's checkpoint
    fit(config, tmp_path / "whole", progress=False)
    assert metrics_without_time(tmp_path / "resumed") == metrics_without_time(tmp_path / "whole")


@pytest.mark.slow
def test_an_image_folder_trains_on_random_resized_crops_and_evaluates_centre_crops(tmp_path):
    make_image_folder(tmp_path / "images" / "train")
    make_image_folder(tmp_path / "images" / "val")
    config = RunConfig(model="mlp32", dataset="imagefolder", data_dir=str(tmp_path / "images"), crop_size=8,
                       epochs=1, batch_size=4)  # fmt: skip
    summary = fit(config, tmp_path / "run", progress=False)
    assert summary["input_shape"] == [8, 8, 3] and summary["num_classes"] == 3
    assert 0 <= summary["test/accuracy"] <= 1


@pytest.mark.parametrize(
    "change, match",
    [
        ({"holdout_fraction": 0.1}, "holdout_fraction change an in-memory data set; records is streamed"),
        ({"crop_size": 8}, "crop_size is for the imagefolder data set"),
    ],
)
def test_what_a_streamed_data_set_cannot_do_is_refused_in_one_line(records, tmp_path, change, match):
    config = forms.tiny_teacher_config().replace(dataset="records", data_dir=records, **change)
    with pytest.raises(ValueError, match=match):
        fit(config, tmp_path / "run", progress=False)
