"""The ShapesWorld recipe: its configs, zero-shot hygiene of the training data, the exported
model, the results table and the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from owl.data import shapes
from owl.recipes import shapes as recipe
from owl.text.tokenizer import get_tokenizer

NOVEL_NAMES = sorted(shapes.CATEGORIES[i] for i in shapes.NOVEL_CATEGORY_INDICES)
BASE_NAMES = sorted(shapes.CATEGORIES[i] for i in shapes.BASE_CATEGORY_INDICES)


def test_stage2_config_trains_base_categories_from_the_backbone(tmp_path):
    config = recipe.finetune_config(
        recipe.default_configs_dir(), ["train.num_steps=7"], backbone=tmp_path / "b.safetensors",
        train_dir=tmp_path / "train",
    )  # fmt: skip
    assert sorted(config.data.remove_categories) == NOVEL_NAMES
    assert len(NOVEL_NAMES) == 16
    assert config.model.variant == recipe.VARIANT
    assert config.init.mode == "clip"
    assert config.init.source == str(tmp_path / "b.safetensors")
    assert config.data.train_annotations == str(tmp_path / "train" / "annotations.json")
    assert config.data.train_images == str(tmp_path / "train" / "images")
    assert config.train.num_steps == 7


def test_settings_refuse_shared_seeds_and_empty_sets():
    with pytest.raises(ValueError, match=r"seeds must differ, got \(5, 6, 5\)"):
        recipe.RecipeSettings(train_seed=5, heldout_seed=6, support_seed=5)
    with pytest.raises(ValueError, match="num_heldout must be >= 1, got 0"):
        recipe.RecipeSettings(num_heldout=0)


def test_training_queries_never_name_a_novel_category(tmp_path):
    """Novel objects stay in the pixels but are neither positives nor negatives (LVIS hygiene)."""
    data = tmp_path / "train"
    shapes.write_coco_dataset(data, 12, seed=3, progress=False)
    dataset = json.loads((data / "annotations.json").read_text())
    novel_ids = set(shapes.NOVEL_CATEGORY_IDS)
    novel_images = {a["image_id"] for a in dataset["annotations"] if a["category_id"] in novel_ids}
    assert novel_images  # the check below is not vacuous
    config = recipe.finetune_config(
        recipe.default_configs_dir(),
        ["train.batch_size=12", "data.mosaic_sizes=(1,)", "data.mosaic_probs=(1.0,)"],
        train_dir=data,
    )
    from owl.train.trainer import build_loaders, model_config_from

    loader, _ = build_loaders(config, model_config_from(config))
    batch = next(iter(loader))
    tokenizer = get_tokenizer()
    seen, positives = set(), set()
    for queries, labels, mask in zip(
        batch["queries"], batch["labels"], batch["instance_mask"], strict=False
    ):
        names = [tokenizer.decode(row) for row in queries]
        seen.update(names)
        for m in np.flatnonzero(mask):
            positives.update(names[q] for q in np.flatnonzero(labels[m]))
    assert not seen & set(NOVEL_NAMES)
    assert seen - {""} <= set(BASE_NAMES)
    assert positives and positives <= set(BASE_NAMES)
    # Every base object of the 12 images is a positive (all images fit in one batch).
    base_in_data = {
        shapes.CATEGORIES[a["category_id"] - 1]
        for a in dataset["annotations"]
        if a["category_id"] not in novel_ids
    }
    assert positives == base_in_data


def test_generated_sets_are_disjoint_worlds(tmp_path):
    settings = recipe.RecipeSettings(num_train=3, num_heldout=2, num_support=2)
    folders = recipe.generate_datasets(tmp_path, settings)
    infos = {
        k: json.loads((v / "annotations.json").read_text())["info"] for k, v in folders.items()
    }
    assert {k: (i["seed"], i["num_images"]) for k, i in infos.items()} == {
        "train": (100, 3), "heldout": (101, 2), "support": (102, 2),
    }  # fmt: skip
    first = {k: (v / "images" / "000000.png").read_bytes() for k, v in folders.items()}
    assert len(set(first.values())) == 3


def test_format_table_marks_targets():
    results = {
        "table": {
            "base_AP": 0.61234, "base_AP50": 0.9, "novel_AP": 0.2, "novel_AP50": 0.55,
            "one_shot_novel_AP": 0.1, "one_shot_novel_AP50": 0.3456,
        },
        "seconds": {"generate": 10.2, "pretrain": 600.0, "finetune": 1200.4, "evaluate": 30.0,
                    "total": 1840.6},
    }  # fmt: skip
    assert recipe.format_table(results).splitlines() == [
        "| metric | value | target |",
        "|---|---|---|",
        "| base AP | 0.612 |  |",
        "| base AP50 | 0.900 | >= 0.85 |",
        "| novel AP | 0.200 |  |",
        "| novel AP50 | 0.550 | >= 0.50 |",
        "| one shot novel AP | 0.100 |  |",
        "| one shot novel AP50 | 0.346 | >= 0.50 |",
        "",
        "Wall time 30.7 min (generate 10 s, pretrain 600 s, finetune 1200 s, evaluate 30 s)",
    ]


def test_a_backbone_of_another_architecture_is_refused(tmp_path):
    import jax

    from owl.models.configs import get_variant
    from owl.train.pretrain import init_pretrainer, save_backbone

    config = get_variant("tiny-owlvit")
    path = save_backbone(
        tmp_path / "b.safetensors", config, init_pretrainer(config, jax.random.PRNGKey(0))
    )
    with pytest.raises(recipe.RecipeError, match="differs from the 'shapes-tiny' variant"):
        recipe.check_backbone(path)


def test_reproduce_refuses_a_finished_workdir(tmp_path):
    (tmp_path / "detector").mkdir()
    (tmp_path / "detector" / "model.safetensors").write_bytes(b"")
    with pytest.raises(recipe.RecipeError, match="already holds a run"):
        recipe.reproduce(tmp_path, recipe.FAST)


@pytest.mark.slow
def test_fast_reproduce_runs_every_stage_and_prints_the_table(tmp_path):
    from owl.cli.shapes import shapes as shapes_cli

    result = CliRunner().invoke(shapes_cli, ["reproduce", "--workdir", str(tmp_path), "--fast"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / recipe.RESULTS_FILE).read_text())
    assert set(saved["seconds"]) == {*recipe.STAGES, "total"}
    for key, value in saved["table"].items():
        assert -1.0 <= value <= 1.0, key
        assert f"| {key.replace('_', ' ')} | {value:.3f} |" in result.output
    assert (tmp_path / "detector" / "model.safetensors").is_file()
    assert saved["model"] == str(tmp_path / recipe.SHIPPED_FILE)  # the table is of this file
    assert (tmp_path / "pretrain" / "backbone.safetensors").is_file()
    for stage in ("pretrain", "detector"):  # both stages' curves, drawn from their own logs
        assert (tmp_path / stage / "training.png").read_bytes()[:4] == b"\x89PNG"
        drawn = json.loads((tmp_path / stage / "training.json").read_text())
        logged = [
            json.loads(line)
            for line in (tmp_path / stage / "metrics.jsonl").read_text().splitlines()
        ]
        train = [r for r in logged if r["split"] == "train"]
        assert drawn["loss"]["loss"]["x"] == [r["step"] for r in train]
        assert drawn["loss"]["loss"]["y"] == pytest.approx([r["loss"] for r in train])
    one_shot = json.loads((tmp_path / "eval" / "one_shot" / "metrics.json").read_text())
    assert sorted(e["category_id"] for e in one_shot["exemplars"]) == list(
        shapes.NOVEL_CATEGORY_IDS
    )
    assert sys.modules.get("owl.recipes.shapes") is recipe


def test_exported_model_keeps_shapesworld_texts_and_zeroes_the_rest(tmp_path):
    import jax

    from owl.checkpoints.owl_format import read_owl, save_owl
    from owl.inference.detector import Detector
    from owl.models.configs import get_variant
    from owl.models.model import OwlModel
    from owl.models.owl_vit import init_params

    config = get_variant("tiny-owlvit")
    params = jax.tree_util.tree_map(np.asarray, init_params(config, jax.random.PRNGKey(3)))
    source = save_owl(tmp_path / "model.safetensors", config, params)
    out = recipe.export_model(source, tmp_path / "shipped.safetensors.gz")
    assert out.stat().st_size < source.stat().st_size / 4
    stored_config, pruned = read_owl(out)
    assert stored_config == config
    table = pruned["backbone"]["clip"]["text"]["token_embedding"]["embedding"]
    kept = np.flatnonzero(np.abs(table).sum(axis=1))
    np.testing.assert_array_equal(kept, recipe.vocabulary_token_ids())
    ids = get_tokenizer().tokenize(["red circle", "a photo of a small white ring"])
    assert set(ids[ids > 0].tolist()) <= set(kept.tolist())
    assert len(kept) < 100  # ShapesWorld needs a few dozen of the 49,408 tokens
    texts = ["red circle", "an orange ring", "a photo of a yellow star.", "white cross"]
    before = Detector(OwlModel(config, params)).embed_texts(texts)
    after = Detector(OwlModel(config, pruned)).embed_texts(texts)
    np.testing.assert_array_equal(after, before)
    # A word ShapesWorld never uses now reads as a zero row.
    (car,) = [t for t in get_tokenizer().tokenize(["car"])[0] if t not in (0, *kept.tolist())]
    assert not table[car].any()
