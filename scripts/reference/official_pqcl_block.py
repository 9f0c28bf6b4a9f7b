"""Run one block of the released PQCL model on fixed image and query tokens; save weights, inputs and outputs.

    python scripts/reference/official_pqcl_block.py PQCL_SRC tests/data/official/pqcl_block.pt

PQCL_SRC: a checkout of Sherrylone/PQCL at a7999c44e8e4d18b07b201ff23cc1b8a9bfccab6 (``utils.py``,
``models/pos_transformer.py``, ``models/pos_embed.py``). What runs: ``models.pos_transformer.Block.forward`` with
image tokens and appended query tokens (its ``global_local_forward``: image tokens attend to image tokens only, each
query to every image token and every query), which is the ``extra_attn="all"`` rule of sslbench's ADCLR
(``pretrain.vit.query_block`` with ``extra_attention_mask(..., "all")``). Used as they are; no patch. Width 16,
2 heads, qkv bias, LayerNorm eps 1e-6, random non-trivial LayerNorm affine parameters; 2 images of 1 + 9 tokens and
3 queries; inputs from torch.manual_seed(0).
"""

from __future__ import annotations

import sys
from functools import partial

import torch
from torch import nn


def main(src: str, out: str) -> None:
    sys.path.insert(0, src)
    from models.pos_transformer import Block

    torch.manual_seed(0)
    block = Block(16, 2, mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.1)
        for p in block.attn.parameters():
            p.normal_(0, 0.3)
    x, y = torch.randn(2, 10, 16), torch.randn(2, 3, 16)
    with torch.no_grad():
        alone = block(x.clone())
        out_x, out_y = block(x.clone(), y.clone())
    torch.save(
        {
            "source": "Sherrylone/PQCL@a7999c44e8e4d18b07b201ff23cc1b8a9bfccab6 models/pos_transformer.py::Block",
            "state_dict": {k: v.clone() for k, v in block.state_dict().items()},
            "x": x,
            "queries": y,
            "image_out_alone": alone,
            "image_out": out_x,
            "query_out": out_y,
        },
        out,
    )
    print(f"image tokens changed by the queries: {float((alone - out_x).abs().max()):.3g} -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
