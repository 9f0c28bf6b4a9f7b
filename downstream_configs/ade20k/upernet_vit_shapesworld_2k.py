# "ADE20K-tiny": the ShapesWorld UperNet trained long enough to compare backbones on CPU (the 6-iteration
# upernet_vit_shapesworld.py only checks that the pipeline runs). Measured at ShapesWorld scale, it does not tell a
# DINO, ADCLR or SERE pretraining from its step 0 (docs/dense.md). Same model, heads, layer decay 0.9 and slide test;
# what changes is the training: every image of ade20k/images/training (the `large` preset has 1,000, 256 px,
# resized to 64), shuffled, horizontal flips, batch 8, AdamW 5e-4, a linear warm-up over 100 iterations then a poly
# decay to 0 (the iBOT/BEiT ADE20K schedule's shape, protocols.md §7.1), 2,000 iterations: 235-350 s of training
# and 6-12 s of test with one thread each, two runs side by side on 2 CPU cores. Give each run one thread
# (OMP_NUM_THREADS=1) when several share the cores: two runs with torch's default threads took 1.2-1.7 s per
# iteration instead of 0.08-0.15.
# The schedule ends at train_iters: change it here, not with train_cfg.max_iters alone.
_base_ = ["upernet_vit_shapesworld.py"]
train_iters = 2000
warmup_iters = 100
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="Resize", scale=(64, 64), keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=8,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(indices=None, pipeline=train_pipeline),
)
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=warmup_iters, end=train_iters),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=train_iters)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=train_iters))
