# iBOT's segmentation schedule (protocols.md §7.1): AdamW betas (0.9, 0.999), wd 0.05, BEiT layer decay, linear
# warm-up over 1500 iterations from 1e-6, then poly decay with power 1.0 to 0, 160k iterations, evaluation at the end.
total_iters = 160000
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=3e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="SSLLayerDecayOptimizerConstructor",
    paramwise_cfg=dict(layer_decay_rate=0.9),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=total_iters),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=total_iters, val_interval=total_iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=16000, max_keep_ckpts=2),
)
