"""Reference files (schema, counts, null/dash semantics), table regeneration, full-protocol table, ``sslbench tables``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import yaml

from evaluate.cli import main
from evaluate.reporting.records import Record, append_records
from evaluate.reporting.reference import REFERENCE_DIR, is_number, load_paper, load_reference, published_records
from evaluate.reporting.results import query
from evaluate.reporting.table_specs import ADCLR_MASK_RCNN, CASCADE, SELFPATCH_MASK_RCNN
from evaluate.reporting.tables import (
    build_tables,
    full_protocol_markdown,
    full_protocol_table,
    regenerate,
    to_latex,
    to_markdown,
)
from sslcore.errors import SSLBenchError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "published_results.yaml"
ARCH = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}


def rec(
    protocol,
    dataset,
    metric,
    value,
    run_id,
    *,
    name="bam-femto",
    sha="a" * 64,
    created="2026-01-01T10:00:00+0000",
    wall=10.0,
    rss=100.0,
):
    return Record(
        protocol=protocol,
        dataset=dataset,
        split="val",
        metric=metric,
        value=value,
        checkpoint={"name": name, "sha256": sha, "format": "sslbench", "arch": ARCH},
        settings={"T": 0.07} if protocol == "knn" else {},
        created=created,
        run_id=run_id,
        wall_time_s=wall,
        peak_memory={"cpu_rss_mb": rss},
    )


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store"
    append_records(
        [
            rec("knn", "shapesworld", "top1@k20", 41.0, "oldknn000001", created="2026-01-01T09:00:00+0000"),
            rec("knn", "shapesworld", "top1@k20", 52.25, "newknn000001"),
            rec("knn", "shapesworld", "top1@k10", 50.0, "newknn000001"),
            rec("davis", "shapesworld-davis", "J&F-Mean", 30.0, "davis0000001", wall=5.0, rss=300.0),
            rec("linear", "shapesworld", "top1", 20.0, "linrnd000001", name="random", sha="b" * 64, wall=3.0),
        ],
        path,
    )
    return path


# ------------------------------------------------------------------------------------------- reference data
def test_reference_files_parse_with_expected_table_counts():
    papers = load_reference()
    assert {k: len(v.tables) for k, v in papers.items()} == {"bam": 9, "adclr": 7, "sere": 8, "readme": 6}
    for name, paper in papers.items():
        for table in paper.tables:
            assert table.paper in (name, None) or name == "readme"
            assert (table.kind == "readme") == (name == "readme")


@pytest.mark.skipif(not SHARED.is_file(), reason="shared transcription not available")
def test_reference_counts_match_the_transcription():
    data = yaml.safe_load(SHARED.read_text())
    papers = load_reference()
    for name in ("bam", "adclr", "sere"):
        expected = [t["id"] for t in data["tables"] if t["paper"] == name and t["kind"] != "readme"]
        assert [t.id for t in papers[name].tables] == expected
    assert [t.id for t in papers["readme"].tables] == [t["id"] for t in data["tables"] if t["kind"] == "readme"]
    # every cell kept as transcribed (numbers, null, dashes, printed strings)
    ours = {t.id: t for p in papers.values() for t in p.tables}
    for table in data["tables"]:
        assert [r["values"] for r in table["rows"]] == [r.values for r in ours[table["id"]].rows]


@pytest.mark.skipif(not SHARED.is_file(), reason="shared transcription not available")
def test_generator_reproduces_committed_files(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_reference", REFERENCE_DIR.parents[1] / "scripts" / "make_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(SHARED, tmp_path)
    for name in ("bam", "adclr", "sere", "readme"):
        assert (tmp_path / f"{name}.yaml").read_text() == (REFERENCE_DIR / f"{name}.yaml").read_text()


def test_null_dash_and_string_semantics():
    tables = {t.id: t for p in load_reference().values() for t in p.tables}
    sup = tables["bam.table5_transfer_finetune"].rows[0]
    assert sup.method == "Sup-IN" and sup.values["food101"] == "-" and sup.values["cifar10"] == 98.1
    assert tables["bam.table2_linear"].rows[0].values["top1"] is None
    assert tables["bam.table1_ablation"].rows[3].values["top1"] == "collapse"
    view = regenerate(tables["bam.table5_transfer_finetune"], query())
    assert view.rows[0][:2] == ["Fine Tuning", "Sup-IN"]  # the row group comes first
    assert view.rows[0][5:] == ["-", "98.1", "87.1", "-", "-", "93.8", "89.5"]
    assert regenerate(tables["bam.table2_linear"], query()).rows[0][-1] == "?"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["tables"][0].update(colour=1), "unknown key 'colour'"),
        (lambda d: d["tables"][0]["rows"][0]["values"].update(top1=True), "a cell must be"),
        (lambda d: d["tables"][0]["rows"][0]["values"].update(bogus=1.0), "'bogus' is not a metric column"),
        (lambda d: d["tables"][0]["columns"][0].update(kind="weird"), "kind 'weird'"),
        (lambda d: d.update(schema="v0"), "'schema' must be"),
    ],
)
def test_schema_rejects_bad_files(tmp_path, edit, message):
    data = yaml.safe_load((REFERENCE_DIR / "bam.yaml").read_text())
    edit(data)
    path = tmp_path / "bam.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SSLBenchError, match=message) as info:
        load_paper(path)
    assert str(path) in str(info.value)


def test_published_records():
    records = published_records()
    numeric = sum(
        is_number(v) for p in load_reference().values() for t in p.tables for r in t.rows for v in r.values.values()
    )
    assert len(records) == numeric
    dino = [r for r in records if r.checkpoint == {"name": "DINO ViT-S/16"} and r.settings["table"] == "dino.readme"]
    knn = next(r for r in dino if r.settings["column"] == "knn_top1")
    assert (knn.protocol, knn.dataset, knn.metric, knn.value, knn.source) == (
        "knn",
        "imagenet",
        "top1@k20",
        74.5,
        "published",
    )
    assert "Sherrylone" not in knn.settings["citation"] and knn.settings["citation"]
    mapped = next(r for r in records if r.settings["table"] == "sere.table4_relation_difference")
    assert (mapped.protocol, mapped.dataset, mapped.metric, mapped.unit) == (
        "sere-relation",  # sslbench eval sere-relation measures this column
        "imagenet-s919",
        "pixel_rel_diff",
        "absolute",
    )
    unmapped = next(r for r in records if r.settings["table"] == "sere.table3_mocov3")
    assert (unmapped.protocol, unmapped.dataset, unmapped.metric) == (
        "voc_semantic_segmentation+imagenet_s_semisupervised_segmentation",  # no sslbench protocol: the table's own
        "sere.table3_mocov3",
        unmapped.settings["column"],
    )


# --------------------------------------------------------------------------------------------- regeneration
EXPECTED_DINO_README = """### dino.readme: DINO released-model numbers (README)

| Method | Arch | Ep. | Batch | k-nn | linear |
|---|---|---|---|---|---|
| DINO | ViT-S/16 |  |  | 74.5 | 77.0 |
| DINO | ViT-S/8 |  |  | 78.3 | 79.7 |
| DINO | ViT-B/16 |  |  | 76.1 | 78.2 |
| DINO | ViT-B/8 |  |  | 77.4 | 80.1 |
| bam-femto | ViT-p8 d32 L2 h2 |  |  | 52.2 [[1]](#dino.readme-r1) | n/m |
| random | ViT-p8 d32 L2 h2 |  |  | n/m | 20.0 [[2]](#dino.readme-r2) |

Records:

- <a id="dino.readme-r1"></a>[1] run `newknn000001`: knn on shapesworld (stand-in for imagenet), split val, metric top1@k20; T=0.07; checkpoint sha256 aaaaaaaaaaaa
- <a id="dino.readme-r2"></a>[2] run `linrnd000001`: linear on shapesworld (stand-in for imagenet), split val, metric top1; checkpoint sha256 bbbbbbbbbbbb
"""


def _table(table_id):
    return next(t for p in load_reference().values() for t in p.tables if t.id == table_id)


def test_markdown_exact(store):
    view = regenerate(_table("dino.readme"), query(store))
    assert to_markdown(view) == EXPECTED_DINO_README


def test_paper_dataset_preferred_over_stand_in(store):
    append_records(
        [rec("knn", "imagenet", "top1@k20", 70.0, "inknn0000001", created="2025-01-01T00:00:00+0000")], store
    )
    view = regenerate(_table("dino.readme"), query(store))
    assert view.rows[4][4] == "70.0" and "run `inknn0000001`: knn on imagenet, split" in view.refs[0].text


def test_linear_prefers_the_dino_variant(store):
    lin = [
        rec("linear", "shapesworld", "top1", 33.0, "lindino00001", created="2026-01-01T08:00:00+0000"),
        rec("linear", "shapesworld", "top1", 35.0, "lingrid00001", created="2026-01-01T11:00:00+0000"),
    ]
    lin[0].settings, lin[1].settings = {"variant": "dino"}, {"variant": "grid"}
    append_records(lin, store)
    view = regenerate(_table("dino.readme"), query(store), checkpoints=["bam-femto"])
    assert view.rows[4][5] == "33.0" and view.refs[1].run_id == "lindino00001"
    assert 'variant="dino"' in view.refs[1].text


def test_bam_tables_take_bams_linear_protocol_and_the_others_dinos(store):
    lin = [
        rec("linear", "shapesworld", "top1", 33.0, "lindino00001", created="2026-01-01T08:00:00+0000"),
        rec("linear", "shapesworld", "top1", 36.0, "linbam000001", created="2026-01-01T11:00:00+0000"),
    ]
    lin[0].settings = {"variant": "dino", "bn_head": False, "lr": 0.001}
    lin[1].settings = {"variant": "dino", "bn_head": True, "lr": 0.002}  # the papers suite's linear-bam job
    append_records(lin, store)
    dino = regenerate(_table("dino.readme"), query(store), checkpoints=["bam-femto"])
    assert dino.rows[4][5] == "33.0" and dino.refs[1].run_id == "lindino00001"
    bam = regenerate(_table("bam.table2_linear"), query(store), checkpoints=["bam-femto"])
    assert bam.rows[-1][-1] == "36.0" and any(ref.run_id == "linbam000001" for ref in bam.refs)
    assert "bn_head=true" in next(ref.text for ref in bam.refs if ref.run_id == "linbam000001")


def test_bam_linear_takes_the_resnet_lr_of_its_protocol_over_dinos(store):
    """A ResNet-50 checkpoint's linear-bam record carries lr 0.3 (the suite's family_settings, BAM Table 9(b)): it is
    BAM's protocol, so it fills BAM's cell even when a plain DINO-protocol record is newer."""
    lin = [
        rec("linear", "shapesworld", "top1", 36.0, "linbamres001", created="2026-01-01T08:00:00+0000"),
        rec("linear", "shapesworld", "top1", 33.0, "lindino00001", created="2026-01-01T11:00:00+0000"),
    ]
    lin[0].settings = {"variant": "dino", "bn_head": True, "lr": 0.3}
    lin[1].settings = {"variant": "dino", "bn_head": False, "lr": 0.001}
    append_records(lin, store)
    bam = regenerate(_table("bam.table2_linear"), query(store), checkpoints=["bam-femto"])
    assert bam.rows[-1][-1] == "36.0" and any(ref.run_id == "linbamres001" for ref in bam.refs)


def test_coco_columns_read_their_papers_detector_only(store):
    runs = [
        rec("coco", "coco2017", "bbox_mAP", 40.0, "cascade00001", created="2026-01-01T08:00:00+0000"),
        rec("coco", "coco2017", "bbox_mAP", 38.0, "maskrcnnadc1", created="2026-01-01T09:00:00+0000"),
        rec("coco", "coco2017", "bbox_mAP", 37.0, "maskrcnnslf1", created="2026-01-01T10:00:00+0000"),
    ]
    configs = [CASCADE[0], ADCLR_MASK_RCNN, SELFPATCH_MASK_RCNN]
    for run, config in zip(runs, configs):
        run.settings = {"config": config}
    append_records(runs[1:], store)  # Mask R-CNN records only: BAM's Cascade column stays unmeasured
    bam = regenerate(_table("bam.table7_coco_ade20k"), query(store), checkpoints=["bam-femto"])
    assert bam.rows[-1][4] == "n/m"
    adclr = regenerate(_table("adclr.table3_coco_maskrcnn"), query(store), checkpoints=["bam-femto"])
    assert "38.0" in adclr.rows[-1] and "37.0" not in adclr.rows[-1]  # ADCLR's stated protocol before SelfPatch's
    selfpatch = regenerate(_table("selfpatch.readme"), query(store), checkpoints=["bam-femto"])
    assert "37.0" in selfpatch.rows[-1]
    append_records(runs[:1], store)
    bam = regenerate(_table("bam.table7_coco_ade20k"), query(store), checkpoints=["bam-femto"])
    assert bam.rows[-1][4] == "40.0"


def test_unmapped_columns_and_extra_columns(store):
    view = regenerate(_table("bam.table6_davis"), query(store))
    femto = view.rows[2]
    assert femto[:2] == ["bam-femto", "ViT-p8 d32 L2 h2"]
    assert femto[4:16] == ["n/a"] * 12  # BAM's propagation parameter is unknown: no mapping
    assert femto[16:] == ["30.0", "n/m", "n/m"]  # sslbench's own J&F / J / F columns
    assert view.refs[0].run_id == "davis0000001"
    none = regenerate(_table("sere.table3_mocov3"), query(store))
    assert len(none.rows) == 2 and "no protocol" in none.notes[0]
    relation = regenerate(_table("sere.table4_relation_difference"), query(store))  # sslbench eval sere-relation
    assert relation.rows[2][:2] == ["bam-femto", "ViT-p8 d32 L2 h2"] and relation.rows[2][4:] == ["n/m", "n/m"]


def test_checkpoint_filter_and_uncertain_positions(store):
    view = regenerate(_table("bam.table7_coco_ade20k"), query(store), checkpoints=["random"])
    assert [r[0] for r in view.rows] == ["MoCoV3", "BEiT", "MAE", "DINO", "BAM", "random"]
    assert view.rows[-1][4:] == ["n/m"] * 4
    assert any("DINO: numbers that survived extraction, column unknown: 46.8, 57.1" in n for n in view.notes)
    with pytest.raises(SSLBenchError, match="'ghost' has no measured record"):
        regenerate(_table("dino.readme"), query(store), checkpoints=["ghost"])


def test_latex_booktabs(store):
    tex = to_latex(regenerate(_table("adclr.table1_in1k_linear_finetune"), query(store)))
    for token in (
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"BEiT$^\dagger$",
        r"20.0\textsuperscript{1}",
        "CAE$^\\dagger$$^\\ddagger$",
    ):
        assert token in tex
    assert "`" not in tex


def test_full_protocol_table(store):
    full = full_protocol_table(query(store))
    assert list(full.index) == ["bam-femto", "random"]
    assert full.loc["bam-femto", "knn/shapesworld/top1@k20"] == 52.25  # the newer run
    assert full.loc["bam-femto", "knn/shapesworld/top1@k10"] == 50.0
    assert pd.isna(full.loc["random", "knn/shapesworld/top1@k20"])
    assert full.loc["bam-femto", "knn wall [s]"] == 10.0  # one distinct (deduplicated) run
    assert full.loc["bam-femto", "total wall [s]"] == 15.0 and full.loc["bam-femto", "peak RSS [MiB]"] == 300.0
    assert full.loc["random", "linear/shapesworld/top1"] == 20.0 and full.loc["random", "total wall [s]"] == 3.0
    metric_columns = [c for c in full.columns if "/" in c]
    assert metric_columns == [
        "knn/shapesworld/top1@k10",
        "knn/shapesworld/top1@k20",
        "linear/shapesworld/top1",
        "davis/shapesworld-davis/J&F-Mean",
    ]
    assert list(full_protocol_table(query(store), ["random"]).index) == ["random"]
    assert full_protocol_table(query(store / "empty")).empty and full_protocol_markdown(query(store / "empty")) == ""
    row = "| random | ViT-p8 d32 L2 h2 | n/m | n/m | 20.00 | n/m |  | 3.0 |  | 3.0 | 100.0 |"  # knn, linear, davis wall
    assert row in full_protocol_markdown(query(store))


def test_build_tables_writes_every_table(store, tmp_path):
    out = tmp_path / "tables"
    paths = build_tables(query(store), out, which="all")
    n_tables = sum(len(p.tables) for p in load_reference().values())
    assert len(paths) == 3 * (n_tables + 1) + 1
    assert all(p.stat().st_size > 0 for p in paths)
    csv = pd.read_csv(out / "adclr.table2_knn_linear.csv")
    femto = csv[csv["Method"] == "bam-femto"].iloc[0]
    assert femto["k-NN"] == "52.2" and femto["Linear"] == "n/m" and femto["records"] == "k-NN=newknn000001"
    full_md = (out / "full_protocol.md").read_text()
    assert "| bam-femto | ViT-p8 d32 L2 h2 | 50.00 | 52.25 | n/m | 30.00 | 10.0 |" in full_md
    assert "(full_protocol.md)" in (out / "README.md").read_text()


def test_cli_tables(store, tmp_path, capsys):
    out = tmp_path / "t"
    assert (
        main(["tables", "--store", str(store), "--out", str(out), "--paper", "sere", "--checkpoints", "bam-femto"]) == 0
    )
    assert sorted(p.name for p in out.glob("*.md")) == sorted(
        ["README.md"] + [f"{t.id}.md" for t in load_reference()["sere"].tables]
    )
    text = (out / "sere.table1_transfer.md").read_text()
    assert "| bam-femto | ViT-p8 d32 L2 h2 |  |  | n/a | n/a | n/m |" in text
    assert main(["tables", "--store", str(store), "--out", str(out), "--checkpoints", "ghost"]) == 2


def test_empty_store_still_regenerates_published_tables(tmp_path):
    paths = build_tables(query(tmp_path / "none"), tmp_path / "out", which="adclr")
    assert len(paths) == 3 * 7 + 1 and not (tmp_path / "out" / "full_protocol.md").exists()
    text = (tmp_path / "out" / "adclr.table3_coco_maskrcnn.md").read_text()
    assert "| Moco-V2 | RN50 | 200 |  | 23 | 38.9 | 59.2 | 42.4 | 35.5 | 56.2 | 37.8 |" in text
    assert "n/m" not in text.split("Cells:")[0]
