"""Tests for owl.inference.inputs: image lists, drawn-image names, boxes, exemplars, query files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from owl.inference.inputs import (
    IMAGE_SUFFIXES,
    InputError,
    drawn_image_names,
    expand_images,
    group_exemplars,
    parse_box,
    read_queries_file,
    split_threshold_suffix,
)
from owl.inference.queries import TextQuery, load_query_embedding, save_query_embedding


@pytest.fixture
def tree(tmp_path):
    """photos/{b.png, a.JPG, notes.txt, .hidden.png, sub/c.jpg, sub/deeper/d.webp, .cache/e.png}."""
    root = tmp_path / "photos"
    for rel in ["b.png", "a.JPG", "notes.txt", ".hidden.png", "sub/c.jpg", "sub/deeper/d.webp",
                ".cache/e.png"]:  # fmt: skip
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def _rel(paths, root):
    return [os.path.relpath(p, root) for p in paths]


def test_folder_is_not_recursive_by_default(tree):
    assert _rel(expand_images([tree]), tree) == ["a.JPG", "b.png"]


def test_folder_recursive_sorted_by_path_and_skips_hidden(tree):
    assert _rel(expand_images([tree], recursive=True), tree) == [
        "a.JPG", "b.png", "sub/c.jpg", "sub/deeper/d.webp",
    ]  # fmt: skip


def test_glob_and_double_star(tree):
    assert _rel(expand_images([str(tree / "*.png")]), tree) == ["b.png"]
    assert _rel(expand_images([str(tree / "**" / "*.jpg")]), tree) == ["sub/c.jpg"]


def test_explicit_file_is_kept_whatever_its_suffix(tree):
    # A named file is the user's choice; the loader says if it is not an image.
    assert expand_images([tree / "notes.txt"]) == [str(tree / "notes.txt")]


def test_missing_file_is_passed_on_for_the_detector_to_report(tree):
    missing = str(tree / "nope.jpg")
    assert expand_images([missing, tree / "b.png"]) == [missing, str(tree / "b.png")]


def test_argument_order_kept_and_repeats_dropped(tree):
    b, a = str(tree / "b.png"), str(tree / "a.JPG")
    assert expand_images([b, tree, a]) == [b, a]


def test_empty_folder_and_unmatched_glob_are_errors(tmp_path, tree):
    empty = tmp_path / "empty"
    (empty / "inner").mkdir(parents=True)
    (empty / "inner" / "x.png").write_bytes(b"x")
    with pytest.raises(InputError, match=r"empty: folder holds no image files.*--recursive"):
        expand_images([empty])
    assert _rel(expand_images([empty], recursive=True), empty) == ["inner/x.png"]
    with pytest.raises(InputError, match=r"'.*\*\.gif' matches no image file"):
        expand_images([str(tree / "*.gif")])


def test_suffix_list_covers_common_formats():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"} <= set(
        IMAGE_SUFFIXES
    )


def test_drawn_names_plain_and_colliding(tmp_path):
    a, b = tmp_path / "x" / "cat.jpg", tmp_path / "y" / "cat.jpg"
    assert drawn_image_names([tmp_path / "dog.jpg", tmp_path / "cow.png"]) == ["dog.png", "cow.png"]
    assert drawn_image_names([a, b, tmp_path / "dog.jpg"]) == [
        "x__cat.png",
        "y__cat.png",
        "dog.png",
    ]
    # Same folder and stem: the suffix tells them apart.
    same = [tmp_path / "cat.jpg", tmp_path / "cat.png"]
    assert drawn_image_names(same) == ["cat_jpg.png", "cat_png.png"]
    # Deep collisions: folders are added only as far as needed.
    deep = [tmp_path / "p" / "q" / "r.png", tmp_path / "s" / "q" / "r.png"]
    assert drawn_image_names(deep) == ["p__q__r.png", "s__q__r.png"]


def test_drawn_names_are_unique_even_when_a_stem_looks_disambiguated(tmp_path):
    paths = [tmp_path / "x" / "cat.jpg", tmp_path / "y" / "cat.jpg", tmp_path / "x__cat.jpg"]
    names = drawn_image_names(paths)
    assert len({n.lower() for n in names}) == 3
    # The same-named images keep the documented a__cat naming; the look-alike gets a counter.
    assert names == ["x__cat.png", "y__cat.png", "x__cat-2.png"]


def test_drawn_names_of_a_folder_holding_an_earlier_run(tmp_path):
    """`owl detect . -r --save-dir drawn` run twice: drawn/a__cat.png must not rename a/cat.png."""
    paths = [tmp_path / "a" / "cat.png", tmp_path / "b" / "cat.png",
             tmp_path / "drawn" / "a__cat.png", tmp_path / "drawn" / "b__cat.png"]  # fmt: skip
    assert drawn_image_names(paths) == ["a__cat.png", "b__cat.png", "a__cat-2.png", "b__cat-2.png"]


@pytest.mark.parametrize(
    "spec, box",
    [("10,20,110,220", (10.0, 20.0, 110.0, 220.0)), (" 1.5, 2 ,3,4.25", (1.5, 2.0, 3.0, 4.25))],
)
def test_parse_box(spec, box):
    assert parse_box(spec) == box


@pytest.mark.parametrize("spec", ["1,2,3", "1,2,3,4,5", "a,b,c,d", "1;2;3;4", "", "1,2,nan,4"])
def test_parse_box_rejects(spec):
    with pytest.raises(InputError, match=r"query box .*expected four numbers X0,Y0,X1,Y1"):
        parse_box(spec)


def test_group_one_image_many_boxes_default_label_is_stem():
    [query] = group_exemplars(["/d/dog.jpg"], [(0, 0, 1, 1), (1, 1, 2, 2)])
    assert query.label == "dog" and query.threshold is None
    assert query.exemplars == (("/d/dog.jpg", (0, 0, 1, 1)), ("/d/dog.jpg", (1, 1, 2, 2)))


def test_group_pairs_by_position_and_merges_shared_labels():
    queries = group_exemplars(
        ["a.jpg", "b.jpg", "c.jpg"], [(0, 0, 1, 1), (0, 0, 2, 2), (0, 0, 3, 3)],
        ["cat@0.4", "dog", "cat"], method="iou",
    )  # fmt: skip
    assert [q.label for q in queries] == ["cat", "dog"]
    assert [q.threshold for q in queries] == [0.4, None]
    assert queries[0].exemplars == (("a.jpg", (0, 0, 1, 1)), ("c.jpg", (0, 0, 3, 3)))
    assert all(q.method == "iou" for q in queries)


def test_group_images_without_boxes():
    queries = group_exemplars(["a.jpg", "b.jpg"], [])
    assert [(q.label, q.exemplars) for q in queries] == [
        ("a", (("a.jpg", None),)), ("b", (("b.jpg", None),)),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "images, boxes, labels, message",
    [
        (["a.jpg", "b.jpg"], [(0, 0, 1, 1)] * 3, [], "got 2 --query-image and 3 --query-box"),
        (["a.jpg"], [(0, 0, 1, 1)] * 3, ["x", "y"], "got 2 --query-label for 3 exemplars"),
        ([], [(0, 0, 1, 1)], [], "need a --query-image"),
        (["a.jpg"], [(0, 0, 1, 1)], [" "], "query label ' ' is empty"),
        (["a.jpg"], [(0, 0, 1, 1)], ["dog@3"], "threshold 3 is not in"),
    ],
)
def test_group_errors(images, boxes, labels, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        group_exemplars(images, boxes, labels)


def test_queries_file(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("# animals\n\nred car@0.3\n  bicycle  \nuser@example.com\n", encoding="utf-8")
    assert read_queries_file(path) == [
        TextQuery("red car", threshold=0.3), TextQuery("bicycle"), TextQuery("user@example.com"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "content, message",
    [
        ("cat\n@0.2\n", r"q\.txt, line 2: empty query '@0\.2'"),
        ("cat@1.5\n", r"q\.txt, line 1: .*threshold 1\.5 is not in \[0, 1\]"),
        ("# only a comment\n\n", r"q\.txt: no queries in the file"),
    ],
)
def test_queries_file_errors(tmp_path, content, message):
    path = tmp_path / "q.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_queries_file(path)


def test_queries_file_missing_or_binary(tmp_path):
    with pytest.raises(InputError, match=r"none\.txt: queries file not found"):
        read_queries_file(tmp_path / "none.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match=r"bin\.txt: cannot read the queries file"):
        read_queries_file(tmp_path / "bin.txt")


def test_split_threshold_suffix(tmp_path):
    assert split_threshold_suffix("dog.npz@0.25") == ("dog.npz", 0.25)
    assert split_threshold_suffix("dog.npz") == ("dog.npz", None)
    odd = tmp_path / "me@0.5"  # an existing file whose name ends like a threshold stays whole
    odd.write_bytes(b"x")
    assert split_threshold_suffix(str(odd)) == (str(odd), None)
    with pytest.raises(InputError, match="threshold 2 is not in"):
        split_threshold_suffix("dog.npz@2")


def test_saved_embedding_records_model_and_kind(tmp_path):
    path = save_query_embedding(tmp_path / "e.npz", np.ones(4), "dog", "owlvit-b32", kind="text")
    query = load_query_embedding(path, 0.4)
    assert (query.model, query.kind, query.label, query.threshold) == (
        "owlvit-b32",
        "text",
        "dog",
        0.4,
    )
    np.testing.assert_array_equal(query.embedding, np.ones(4, np.float32))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a query embedding file"):
        load_query_embedding(tmp_path / "junk.npz")


# -- matching a dataset's ids (owl detect --annotations) -------------------------------------------


def test_match_dataset_images_by_file_name_and_folder(tmp_path):
    from owl.inference.inputs import match_dataset_images

    records = [
        {"id": 7, "file_name": "a.png"},
        {"id": 8, "file_name": "val/b.png"},
        {"id": 9, "file_name": "train/b.png"},
        {"id": 10, "coco_url": "http://images.cocodataset.org/val2017/000000000139.jpg"},
        {"id": 11, "file_name": "x/c.png"},
        {"id": 12, "file_name": "y/c.png"},
    ]
    paths = [tmp_path / "a.png", tmp_path / "val" / "b.png", tmp_path / "train" / "b.png",
             tmp_path / "000000000139.jpg", tmp_path / "b.png", tmp_path / "z" / "c.png",
             tmp_path / "nope.png"]  # fmt: skip
    # b.png outside val/ and train/ matches neither; c.png in z/ matches x/ and y/ equally.
    assert match_dataset_images(paths, records) == [7, 8, 9, 10, None, None, None]


def test_match_categories_by_name_exact_then_ignoring_case():
    from owl.inference.inputs import match_categories

    categories = [{"id": 3, "name": "Cat"}, {"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}]
    assert match_categories(["cat", "Cat", "DOG", "zebra"], categories) == [5, 3, 9, None]
