# iBOT's COCO fine-tuning schedule as run by its README command (protocols.md §6.1): AdamW lr 1e-4, betas
# (0.9, 0.999), wd 0.05, BEiT layer decay, 12 epochs with x0.1 steps after epochs 8 and 11, linear warm-up 500
# iterations from 0.001. The lr is not rescaled with the batch (auto_scale_lr off).
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="SSLLayerDecayOptimizerConstructor",
    paramwise_cfg=dict(layer_decay_rate=0.75),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=12, val_interval=12)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
auto_scale_lr = dict(enable=False, base_batch_size=16)
