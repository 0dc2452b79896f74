"""CelebA on tiny fabricated folders: loading, the cache, bad input, and end-to-end runs of `main.py`."""

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from src.common.errors import UserError
from src.data import Data, Split
from src.datasets import cache, celeba_files
from src.datasets.celeba import CelebADataModule, CelebAttr
from tests.celeba_folder import (
    HIGH,
    LOW,
    FakeCelebA,
    blue_of,
    image_indices,
    write_attribute_file,
    write_celeba,
    write_lines,
)
from tests.helpers import RunMain


@pytest.fixture
def fake(tmp_path: Path) -> FakeCelebA:
    return write_celeba(tmp_path / "data")


def build(
    fake: FakeCelebA,
    *,
    default_res: int = 16,
    superclass: CelebAttr = CelebAttr.SMILING,
    subclass: CelebAttr = CelebAttr.MALE,
    split_seed: int | None = None,
) -> Data:
    """Load `fake` in this process, as a new run of `main.py` would."""
    cache._last_loaded = None  # pyright: ignore[reportPrivateUsage] (a new run: nothing loaded yet)
    dm = CelebADataModule(
        root=fake.root,
        download=False,
        default_res=default_res,
        superclass=superclass,
        subclass=subclass,
        split_seed=split_seed,
    )
    return dm.build(seed=0)


def images_of(split: Split) -> torch.Tensor:
    """The split's images, in its order: rows of the images that all splits share."""
    assert split.rows is not None  # an index list, not a copy of the split's images
    return split.images[split.rows]


def cache_files(fake: FakeCelebA) -> list[Path]:
    return sorted((fake.root / "cache").glob("*.tensors"))


@pytest.mark.parametrize(
    ("superclass", "subclass"),
    [
        (CelebAttr.SMILING, CelebAttr.MALE),
        (CelebAttr.BLOND, CelebAttr.YOUNG),
        (CelebAttr.FIVE_O_CLOCK_SHADOW, CelebAttr.WEARING_NECKTIE),  # the first and the last column
    ],
)
def test_every_split_holds_the_images_labels_and_groups_written(
    fake: FakeCelebA, superclass: CelebAttr, subclass: CelebAttr
) -> None:
    data = build(fake, superclass=superclass, subclass=subclass)
    for index, split in enumerate((data.train, data.val, data.test)):
        expected = (fake.partition == index).nonzero().squeeze(1)  # the official partition, in file order
        assert torch.equal(image_indices(images_of(split)), expected)
        assert torch.equal(split.labels, fake.column(superclass)[expected].long())
        assert torch.equal(split.groups, fake.column(subclass)[expected].long())
    assert data.num_classes == 2
    assert data.group_names == [f"not_{subclass.value}", subclass.value]
    assert data.source == "celeba"
    assert data.input_shape == (3, 16, 16)


@pytest.mark.parametrize("res", [8, 64, 200])
def test_images_are_the_centre_square_resized(fake: FakeCelebA, res: int) -> None:
    images = images_of(build(fake, default_res=res).train)
    indices = image_indices(images)
    expected = torch.stack(
        [
            torch.where(fake.column(CelebAttr.SMILING)[indices], HIGH, LOW),
            torch.where(fake.column(CelebAttr.MALE)[indices], HIGH, LOW),
            torch.tensor([blue_of(int(i)) for i in indices]),
        ],
        dim=1,
    )
    assert images.shape == (len(indices), 3, res, res)
    assert images.dtype == torch.uint8
    deviation = (images.int() - expected[:, :, None, None]).abs().float()
    # Without the crop, the black bands would fill a fifth of the rows; JPEG blurs only their border.
    assert deviation.mean() < 8
    assert deviation[:, :, res // 2].max() <= 3


def test_the_splits_are_index_lists_over_one_memory_mapped_copy_of_the_images(fake: FakeCelebA) -> None:
    data = build(fake)
    [cache] = cache_files(fake)
    splits = (data.train, data.val, data.test)
    images = data.train.images
    assert all(split.images is images for split in splits)  # one tensor of all the images, no copy per split
    assert len(images) == len(fake.partition)
    rows = torch.cat([split.rows for split in splits if split.rows is not None])
    assert torch.equal(rows.sort().values, torch.arange(len(fake.partition)))
    # Its memory is the cache file's, mapped: the processes of a node share its pages.
    address = images.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(bound, 16) for bound in line.split()[0].split("-"))
        if start <= address < end:
            assert line.endswith(str(cache))
            break
    else:
        pytest.fail("the images are in no mapping")
    # On the CPU, training and evaluation use the split as it is.
    assert all(split.to(torch.device("cpu")) is split for split in splits)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA, which this machine lacks (docs/gpu.md)")
def test_a_split_moved_to_a_gpu_holds_its_own_images_only(fake: FakeCelebA) -> None:
    val = build(fake).val
    on_gpu = val.to(torch.device("cuda", 0))
    assert on_gpu.rows is None
    assert torch.equal(on_gpu.images.cpu(), images_of(val))
    assert torch.equal(on_gpu.labels.cpu(), val.labels)
    assert torch.equal(on_gpu.batch(slice(2, 5)).cpu(), val.batch(slice(2, 5)))


def test_decoding_reports_its_progress_in_images_per_second_and_time_left(
    fake: FakeCelebA, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(celeba_files, "CHUNK", 8)  # six chunks of the 48 images
    monkeypatch.setattr(celeba_files, "PROGRESS_S", 0.0)  # a line after each but the last
    caplog.set_level(logging.INFO)
    build(fake)
    progress = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Decoding CelebA:")]
    assert [line.split(" images,")[0] for line in progress] == [f"Decoding CelebA: {n} of 48" for n in range(8, 48, 8)]
    assert all(re.fullmatch(r".* images, [\d,]+ images/s, \d+ s left\.", line) for line in progress), progress
    assert re.search(r"Decoded 48 images in \d+ s \([\d,]+ images/s\)\.", caplog.text)


def test_split_seed_reshuffles_the_official_partition(fake: FakeCelebA) -> None:
    official = build(fake)
    resplit = build(fake, split_seed=1)
    splits = (resplit.train, resplit.val, resplit.test)
    assert [len(split) for split in splits] == [len(official.train), len(official.val), len(official.test)]
    indices = torch.cat([image_indices(images_of(split)) for split in splits])
    assert torch.equal(indices.sort().values, torch.arange(len(fake.partition)))  # every image, once
    assert not torch.equal(image_indices(images_of(resplit.val)), image_indices(images_of(official.val)))
    for split in splits:
        assert torch.equal(split.labels, fake.column(CelebAttr.SMILING)[image_indices(images_of(split))].long())
    same_seed = build(fake, split_seed=1)
    assert torch.equal(images_of(same_seed.val), images_of(resplit.val))


def test_the_cache_is_read_on_later_runs_and_keyed_by_the_resolution(
    fake: FakeCelebA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = build(fake)
    [cache] = cache_files(fake)
    assert cache.name.startswith("celeba-16px-")
    assert f"Cached the prepared data in {cache}" in caplog.text
    for image in (fake.folder / "img_align_celeba").iterdir():
        image.write_bytes(b"not a JPEG")  # the next run must not open the images
    caplog.clear()
    second = build(fake)
    assert f"Read the prepared data from the cache {cache}." in caplog.text
    assert torch.equal(images_of(second.train), images_of(first.train))
    assert torch.equal(second.test.labels, first.test.labels)
    with pytest.raises(UserError, match="is not a readable image"):
        build(fake, default_res=24)  # another resolution: another cache, so the images are decoded
    assert cache_files(fake) == [cache]


def test_a_changed_attribute_file_is_not_served_from_the_old_cache(fake: FakeCelebA) -> None:
    build(fake)
    smiling = fake.column(CelebAttr.SMILING)
    smiling[1] = not smiling[1]
    write_attribute_file(fake)  # the same size: only the modification time tells the caches apart
    attr_file = fake.folder / "list_attr_celeba.txt"
    # A second later, as an edit by hand would be: file-system clocks can be too coarse to tell otherwise.
    os.utime(attr_file, ns=(attr_file.stat().st_atime_ns, attr_file.stat().st_mtime_ns + 1_000_000_000))
    train = build(fake).train
    assert train.labels[image_indices(images_of(train)) == 1].item() == int(fake.column(CelebAttr.SMILING)[1])
    assert len(cache_files(fake)) == 2


def test_a_damaged_cache_is_rebuilt(fake: FakeCelebA, caplog: pytest.LogCaptureFixture) -> None:
    first = images_of(build(fake).val)  # gathered: a copy in memory, not the mapped file damaged next
    [cache] = cache_files(fake)
    cache.write_bytes(cache.read_bytes()[:1000])
    second = build(fake)
    assert f"the cache {cache} is damaged" in caplog.text
    assert torch.equal(images_of(second.val), first)
    assert cache.stat().st_size > 1000


def test_where_no_cache_can_be_written_the_data_is_prepared_in_memory_with_a_warning(
    fake: FakeCelebA, caplog: pytest.LogCaptureFixture
) -> None:
    cached = build(fake)
    fingerprint, images = cached.fingerprint(), images_of(cached.train)
    other = write_celeba(fake.root.parent / "other")
    (other.root / "cache").write_text("a file, where the cache folder would be")
    in_memory = build(other)
    assert "cannot use the cache" in caplog.text
    assert "preparing the data without it." in caplog.text
    # The worker processes decoded into memory that they share with this process.
    assert torch.equal(images_of(in_memory.train), images)
    assert in_memory.fingerprint() == fingerprint


def _edit_line(name: str, number: int, edit: Callable[[str], str]) -> Callable[[FakeCelebA], None]:
    def apply(fake: FakeCelebA) -> None:
        path = fake.folder / name
        lines = path.read_bytes().decode().split("\r\n")[:-1]
        lines[number - 1] = edit(lines[number - 1])
        write_lines(path, lines)

    return apply


def _truncate(name: str, size: int) -> Callable[[FakeCelebA], None]:
    def apply(fake: FakeCelebA) -> None:
        path = fake.folder / name
        path.write_bytes(path.read_bytes()[:size])

    return apply


def _keep_lines(name: str, count: int) -> Callable[[FakeCelebA], None]:
    def apply(fake: FakeCelebA) -> None:
        path = fake.folder / name
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:count]))

    return apply


def _image(index: int, content: Callable[[bytes], bytes | None]) -> Callable[[FakeCelebA], None]:
    def apply(fake: FakeCelebA) -> None:
        path = fake.folder / "img_align_celeba" / fake.image_name(index)
        new = content(path.read_bytes())
        if new is None:
            path.unlink()
        else:
            path.write_bytes(new)

    return apply


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_edit_line("list_attr_celeba.txt", 1, lambda _: "many"), r"list_attr_celeba.txt:1: expected the number"),
        (
            _edit_line("list_attr_celeba.txt", 2, lambda line: line.replace("No_Beard", "Beard")),
            r"list_attr_celeba.txt:2: expected the 40 attribute names",
        ),
        (
            _edit_line("list_attr_celeba.txt", 9, lambda line: line[:-2] + " 0"),
            r"list_attr_celeba.txt:9: expected an image name and 40 values of -1 or 1, found '000007.jpg",
        ),
        (_truncate("list_attr_celeba.txt", 2000), r"list_attr_celeba.txt:\d+: expected an image name and 40"),
        (_keep_lines("list_attr_celeba.txt", 20), r"list_attr_celeba.txt:1: announces 48 images, but 18 follow"),
        (
            _edit_line("list_eval_partition.txt", 5, lambda line: line.replace(" 1", " 3")),
            r"list_eval_partition.txt:5: expected an image name and 0 \(train\)",
        ),
        (
            _keep_lines("list_eval_partition.txt", 40),
            r"list_eval_partition.txt has no line for 000041.jpg \(list_attr_celeba.txt:43\)",
        ),
        (_image(6, lambda _: None), r"img_align_celeba/000007.jpg is missing \(list_attr_celeba.txt:9 lists it\)"),
        (
            _image(6, lambda _: b"<html>quota exceeded</html>"),
            r"img_align_celeba/000007.jpg \(list_attr_celeba.txt:9\) is not a readable image",
        ),
        (
            _image(6, lambda jpeg: jpeg[: len(jpeg) // 2]),
            r"img_align_celeba/000007.jpg \(list_attr_celeba.txt:9\) is not a readable image",
        ),
    ],
)
def test_bad_files_stop_with_one_line_naming_file_and_line_and_no_cache(
    fake: FakeCelebA, damage: Callable[[FakeCelebA], None], message: str
) -> None:
    damage(fake)
    with pytest.raises(UserError, match=message) as error:
        build(fake)
    assert "\n" not in str(error.value)
    assert "mmlab.ie.cuhk.edu.hk" in str(error.value)  # where to get the original files
    assert cache_files(fake) == []


def test_missing_files_without_download_say_what_is_missing_where(tmp_path: Path) -> None:
    (tmp_path / "celeba").mkdir()
    (tmp_path / "celeba" / "list_eval_partition.txt").touch()
    with pytest.raises(UserError) as error:
        CelebADataModule(root=tmp_path, download=False).build(seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert (
        f"CelebA is incomplete in {tmp_path / 'celeba'} (missing: img_align_celeba/, list_attr_celeba.txt)" in message
    )
    assert "dm.download=false" in message


def test_a_failed_download_says_why_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gdown(*args: object, **kwargs: object) -> None:
        # torchvision's own message when gdown is not installed
        raise RuntimeError(
            "To download files from GDrive, 'gdown' is required.\nYou can install it with 'pip install gdown'."
        )

    monkeypatch.setattr("torchvision.datasets.CelebA", no_gdown)
    with pytest.raises(UserError) as error:
        CelebADataModule(root=tmp_path, download=True).build(seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert "the download failed (To download files from GDrive, 'gdown' is required." in message
    assert "Google Drive" in message


@pytest.mark.slow
def test_the_good_run_experiment_learns_on_celeba(run_main: RunMain, fake: FakeCelebA, tmp_path: Path) -> None:
    result = run_main(
        "+experiment=good_run", "opt.epochs=5", "hydra.run.dir=out", env={"HYDRA_EXAMPLE_DATA": str(fake.root)}
    )
    assert result.returncode == 0, result.stderr
    assert "Cached the prepared data" in result.stdout
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["data"]["source"] == "celeba"
    metrics = record["metrics"]
    assert metrics["val/acc"] > 0.5  # SMILING is balanced in every split: chance is 0.5
    assert metrics["test/acc"] > 0.5
    assert metrics["test/worst_group_acc"] == min(metrics["test/acc_Male"], metrics["test/acc_not_Male"])
    assert len(cache_files(fake)) == 1
    assert cache_files(fake)[0].name.startswith("celeba-32px-")  # celeba_male_smiling_small


@pytest.mark.slow
def test_every_celeba_option_runs(run_main: RunMain, fake: FakeCelebA, tmp_path: Path) -> None:
    options = "celeba,celeba_male_blond,celeba_male_smiling,celeba_male_smiling_small"
    # One process for all four: a multirun, with the smallest model, which trains fastest.
    result = run_main(
        "--multirun", f"dm={options}", "model=single_linear_layer", "opt.epochs=1", "hydra.sweep.dir=multi",
        env={"HYDRA_EXAMPLE_DATA": str(fake.root)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for job in range(4):
        record = json.loads((tmp_path / "multi" / str(job) / "metrics.json").read_text())
        assert record["status"] == "finished"
        assert record["data"]["source"] == "celeba"
        assert "val/acc_Male" in record["metrics"]
    # The first three share one cache: the label and subgroup are chosen after loading.
    assert sorted(path.name.split("-")[1] for path in cache_files(fake)) == ["32px", "64px"]


def test_an_unknown_attribute_suggests_the_closest(run_main: RunMain) -> None:
    result = run_main("dm=celeba", "dm.superclass=BEARD")
    assert result.returncode == 1
    assert "'BEARD' is not a CelebA attribute (did you mean NO_BEARD?)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "overrides", [("dm=celeba", "dm.superclass=MALE"), ("dm=celeba_male_blond", "dm.subclass=BLOND_HAIR")]
)
def test_one_attribute_as_label_and_subgroup_is_refused(run_main: RunMain, overrides: tuple[str, ...]) -> None:
    result = run_main(*overrides)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: dm.superclass and dm.subclass are both ")
    assert result.stderr.count("\n") == 1


@pytest.mark.slow
def test_missing_celeba_stops_the_run_with_one_line(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("+experiment=good_run", env={"HYDRA_EXAMPLE_DATA": str(tmp_path / "empty")})
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: CelebA is incomplete in {tmp_path / 'empty' / 'celeba'}")
    assert result.stderr.count("\n") == 1
