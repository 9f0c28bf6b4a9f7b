"""Batched rendering (``data.render: batch``) against the PIL path, op by op, and through the dataset and engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.config import DataConfig
from pretrain.crops import MultiCropAugment
from pretrain.data import MultiCropDataset, render_batch
from pretrain.render import (
    COL,
    gaussian_matrix,
    photometric,
    render_queries,
    render_views,
    resize_matrix,
    resized_crops,
)
from pretrain.views import ViewPlan, collate


def _natural(seed: int, height: int, width: int) -> Image.Image:
    """A smooth gradient with a disc and mild noise: what a photo's crop looks like at this size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx * 200 / width, yy * 220 / height, 128 + 60 * np.sin(xx / 5.0 + seed)], -1)
    disc = (xx - width * 0.45) ** 2 + (yy - height * 0.5) ** 2 < (min(height, width) * 0.25) ** 2
    img[disc] = [200, 40 + 10 * seed, 40]
    img += rng.normal(0, 8, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


CFG = DataConfig(global_size=32, local_size=16, local_crops=3, num_workers=0)
SIZES = [32, 32, 16, 16, 16]
# non-square images of different sizes (the batch pads them), as real data has
IMAGES = [_natural(i, 61 + 3 * (i % 4), 77 - 2 * (i % 3)) for i in range(12)]


def _drawn(aug: MultiCropAugment, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.stack([aug.draw_all(im.size[1], im.size[0]) for im in IMAGES])


def _pil(aug: MultiCropAugment, params: torch.Tensor) -> list[torch.Tensor]:
    return [
        torch.stack([aug.render_pil(im, params[i, v], SIZES[v]) for i, im in enumerate(IMAGES)])
        for v in range(len(SIZES))
    ]


def _batch(params: torch.Tensor) -> list[torch.Tensor]:
    images = collate(
        [
            {
                "views": None,
                "image": _tensor(im),
                "params": params[i],
                "boxes": torch.zeros(5, 4),
                "flips": torch.zeros(5, dtype=torch.bool),
                "index": i,
                "label": 0,
                "skipped": 0,
            }
            for i, im in enumerate(IMAGES)
        ],
        num_global=2,
    ).images
    return render_views(images, params, SIZES, CFG.mean, CFG.std)


def _grey_levels(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    std = torch.tensor(CFG.std).view(1, 3, 1, 1)
    return torch.cat([((x - y) * std * 255).abs().flatten() for x, y in zip(a, b)])


def test_draw_then_render_pil_is_the_pil_augmentation_bit_for_bit():
    """``__call__`` = ``draw`` + ``render_pil``, and ``draw`` consumes the generator exactly like the old loop, so
    the pil path (and every committed run) is unchanged."""
    aug = MultiCropAugment(CFG)
    img = IMAGES[3]
    torch.manual_seed(7)
    views, boxes, flips = aug(img)
    after = torch.rand(3)
    torch.manual_seed(7)
    rows = aug.draw_all(img.size[1], img.size[0])
    assert torch.equal(torch.rand(3), after)
    for v, row in enumerate(rows):
        assert torch.equal(aug.render_pil(img, row, SIZES[v]), views[v])
    b2, f2 = aug.boxes_and_flips(rows)
    assert torch.equal(b2, boxes) and torch.equal(f2, flips)


def test_crops_match_pil_bicubic_within_one_grey_level():
    aug = MultiCropAugment(CFG)
    params = _drawn(aug)
    for name in ("jitter", "gray", "blur", "solarize"):
        params[..., COL[name]] = 0
    diff = _grey_levels(_pil(aug, params), _batch(params))
    assert params[..., COL["flip"]].sum() > 5  # flips exercised
    assert float(diff.mean()) < 0.5 and float(diff.max()) <= 1.5, (float(diff.mean()), float(diff.max()))


@pytest.mark.parametrize(
    ("op", "mean_bound", "p99_bound"),
    [("jitter", 2.0, 10.0), ("gray", 0.5, 1.5), ("blur", 0.8, 7.0), ("solarize", 0.5, 1.5)],
)
def test_each_photometric_op_matches_pil(op, mean_bound, p99_bound):
    """Every op with the parameters the PIL path drew; PIL rounds to 8 bits after each op and approximates the
    Gaussian by box blurs, hence the bounds (in grey levels of 255)."""
    aug = MultiCropAugment(CFG)
    drawn = _drawn(aug, seed=3)
    params = drawn.clone()
    for name in ("jitter", "gray", "blur", "solarize"):
        params[..., COL[name]] = drawn[..., COL[name]] if name == op else 0
    if op != "jitter":  # make every row use the op (its draw probability is low for some views)
        params[..., COL[op]] = drawn[..., COL["blur"]].clamp(min=0.3) if op == "blur" else 1.0
    else:
        params[..., COL["jitter"]] = 1.0
        assert len({tuple(r) for r in params[..., COL["order0"] : COL["order3"] + 1].reshape(-1, 4).tolist()}) > 5
    diff = _grey_levels(_pil(aug, params), _batch(params))
    assert float(diff.mean()) < mean_bound and float(diff.quantile(0.99)) < p99_bound, (
        float(diff.mean()),
        float(diff.quantile(0.99)),
    )


def test_full_recipe_matches_pil_on_average():
    aug = MultiCropAugment(CFG)
    params = _drawn(aug, seed=11)
    diff = _grey_levels(_pil(aug, params), _batch(params))
    assert float(diff.mean()) < 2.5, float(diff.mean())


def test_identity_crop_and_zero_blur_are_exact():
    x = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8)
    zero, nine = torch.zeros(2), torch.full((2,), 9.0)
    assert torch.allclose(resize_matrix(zero, nine, 9, 9), torch.eye(9).expand(2, 9, 9), atol=1e-6)
    assert torch.allclose(resized_crops(x, zero, zero, nine, nine, 9), x / 255.0, atol=1e-6)
    flipped = resized_crops(x, zero, zero, nine, nine, 9, flip=torch.tensor([True, False]))
    assert torch.allclose(flipped[0], x[0].flip(-1) / 255.0, atol=1e-6)
    assert torch.allclose(flipped[1], x[1] / 255.0, atol=1e-6)
    assert torch.allclose(gaussian_matrix(torch.tensor([0.0]), 7)[0], torch.eye(7))
    k = gaussian_matrix(torch.tensor([1.5, 0.4]), 11)
    assert torch.allclose(k.sum(-1), torch.ones(2, 11), atol=1e-6)
    # a constant image stays constant under blur with replicated edges
    flat = torch.full((2, 3, 11, 11), 0.5)
    params = torch.zeros(2, len(COL))
    params[:, COL["blur"]] = torch.tensor([1.5, 0.4])
    assert torch.allclose(photometric(flat, params), flat, atol=1e-6)


def test_resize_matrix_reads_only_inside_the_crop():
    start, length = torch.tensor([5.0, 0.0]), torch.tensor([20.0, 7.0])
    m = resize_matrix(start, length, 8, 40)
    assert torch.all(m[0, :, :5] == 0) and torch.all(m[0, :, 25:] == 0)
    assert torch.all(m[1, :, 7:] == 0)
    assert torch.allclose(m.sum(-1), torch.ones(2, 8), atol=1e-6)


def test_queries_match_pil_query_crops():
    from pretrain.crops import query_crops

    img = IMAGES[2]
    torch.manual_seed(4)
    crops, boxes = query_crops(img, 6, 8, (0.05, 0.15), (0.75, 4 / 3), CFG.mean, CFG.std)
    batched = render_queries(_tensor(img)[None], boxes[None], 8, CFG.mean, CFG.std)[0]
    diff = _grey_levels([crops], [batched])
    assert float(diff.max()) <= 1.5, float(diff.max())


def test_dataset_batch_mode_draws_what_pil_mode_draws(tmp_path):
    """Same boxes, flips, masks and query boxes in both modes; rendered views close to the pil views."""
    paths = []
    for i, im in enumerate(IMAGES[:4]):
        paths.append((str(tmp_path / f"{i}.png"), 0))
        im.save(paths[-1][0])
    plan = ViewPlan(2, 3, patch_size=8, masks=True, query_crops=3)
    pil = MultiCropDataset(paths, MultiCropAugment(CFG), seed=5, plan=plan)
    bat = MultiCropDataset(paths, MultiCropAugment(CFG), seed=5, plan=plan, render="batch")
    a = collate([pil[(i, 2)] for i in range(4)], num_global=2)
    b = collate([bat[(i, 2)] for i in range(4)], num_global=2)
    assert b.globals == [] and b.images.shape == (4, 3, 70, 77) and b.images.dtype == torch.uint8
    for name in ("boxes", "flips", "query_boxes"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert all(torch.equal(x, y) for x, y in zip(a.masks, b.masks))
    rendered = render_batch(b, bat.augment, plan)
    assert rendered.images is None and rendered.params is None
    assert [tuple(v.shape) for v in rendered.views] == [tuple(v.shape) for v in a.views]
    assert rendered.queries.shape == a.queries.shape
    assert float(_grey_levels(a.views, rendered.views).mean()) < 2.5
    assert float(_grey_levels([a.queries.flatten(0, 1)], [rendered.queries.flatten(0, 1)]).max()) <= 1.5
    # an already rendered batch passes through
    assert render_batch(a, pil.augment, plan) is a


def test_bad_render_mode_is_refused():
    with pytest.raises(ValueError, match="render"):
        MultiCropDataset([], MultiCropAugment(CFG), render="gpu")
    with pytest.raises(ValueError, match="views"):
        render_views(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 2, len(COL)), [8], CFG.mean, CFG.std)


def test_render_mode_is_validated_by_the_config():
    from pretrain.config import PretrainConfig
    from sslcore.config import load_config
    from sslcore.errors import ConfigError

    assert load_config(PretrainConfig, "pretrain/configs/bam_shapes_tiny.yaml", ["data.render=batch"]).data.render == (
        "batch"
    )
    with pytest.raises(ConfigError, match=r"data\.render"):
        load_config(PretrainConfig, "pretrain/configs/bam_shapes_tiny.yaml", ["data.render=gpu"])


def test_engine_renders_a_batch_the_loader_left_unrendered(tmp_path, shapes_root):
    """The CUDA path (loader without rendering, the engine renders on the device) takes the same step as the CPU path
    (rendered in the collate function), exercised here on CPU."""
    from test_engine import toy_cfg

    from pretrain.data import make_loader
    from pretrain.engine import Trainer

    root = str(shapes_root / "classification" / "train")
    cfg = toy_cfg(tmp_path, root, **{"data.render": "batch"})
    losses = []
    for in_workers in (True, False):
        torch.manual_seed(0)
        trainer = Trainer(cfg)
        data = trainer.data
        data.sampler.set_epoch(0)
        batch = next(iter(make_loader(data.dataset, data.sampler, 0, render_in_workers=in_workers)))
        assert (batch.images is None) == in_workers and (len(batch.globals) == 2) == in_workers
        losses.append(trainer.train_step(batch)[0])
    assert losses[0] == losses[1]
