"""README.md's table of families and weight sources is the manifest's, rendered by tools/."""

import copy
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import readme_table  # noqa: E402


def test_readme_weights_table_is_rendered_from_the_manifest():
    """Fails when weights_manifest.json (or the registry) moves and README.md does not."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table.in_readme(readme) == readme_table.current(), (
        "README.md's weights table differs from the manifest: "
        "run `python tools/readme_table.py --write`")


def test_the_table_is_in_the_first_screen():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines.index(readme_table.END) < 50


def test_each_figure_follows_the_manifest():
    """Changing a manifest field changes the rendered row: nothing in the table is typed."""
    from keras_lightnets.weights import manifest

    entries = copy.deepcopy(manifest.entries())
    before = readme_table.render(entries)
    for e in entries:
        if e["family"] == "MnasNet" and e["weights"] == "imagenet":
            e["top1"] = 99.94
            e["params"] += 10**8 if e["variant"]["alpha"] == 1.3 else 0
            e["source"] = "timm (a new source)"
    after = readme_table.render(entries)
    row = next(r for r in after.splitlines() if r.startswith("| `MnasNet` |"))
    assert row == ("| `MnasNet` | timm | alpha 0.5, 0.75, 1.0, 1.3 | `imagenet` 99.9, `timm` 74.7 "
                   "| 224 | 2.24-106.33M |")
    assert before.replace(next(r for r in before.splitlines() if "MnasNet" in r), row) == after


def test_families_without_weights_and_variant_words():
    entries = [
        {"family": "F", "source": "torchvision x", "input_size": s, "include_top": top,
         "top1": t, "params": p, "variant": {"alpha": a, "minimalistic": m, "act": "relu"},
         "weights": "imagenet"}
        for a, m, t, p in ((1.0, True, 60.0, 2_000_000), (0.75, False, 65.25, 3_000_000),
                           (1.0, False, 70.0, 4_000_000))
        for s, top in ((224, True), (224, False), (160, True))]
    rows = readme_table.rows(entries, {"G": [1_000_000, 500_000]})
    assert rows == [
        "| `F` | torchvision | alpha 0.75, 1.0, 1.0 minimalistic | `imagenet` 60.0-70.0 "
        "| 160/224 | 2.00-4.00M |",
        "| `G` | none published | - | - | - | 0.50-1.00M |"]


def test_a_row_per_family_its_sets_imagenet_first():
    """Several sets of one family: one row, "imagenet" first, then by name, whatever the
    manifest's order; families stay in the manifest's order. A family only timm publishes
    shows its default set as "imagenet"; a set without URLs (megvii's) does not."""
    def entry(family, weights, source, alpha, top1):
        return {"family": family, "weights": weights, "source": source, "input_size": 224,
                "include_top": True, "top1": top1, "params": int(alpha * 1e6),
                "variant": {"alpha": alpha}}

    entries = [entry("F", "paddle_ssld", "paddle", 1.0, 79.0),
               entry("H", "imagenet", "torchvision", 1.0, 70.0),
               entry("F", "imagenet", "keras.applications", 0.5, 60.0),
               entry("F", "imagenet", "keras.applications", 1.0, 70.0),
               entry("F", "paddle", "paddle", 0.35, 64.0),
               entry("F", "paddle", "paddle", 1.25, 76.0)]
    timm = [dict(entry("T", "timm", "timm", 1.0, 73.8), url="https://t"),
            dict(entry("T", "timm_r256", "timm", 1.0, 74.5), url="https://t", input_size=256),
            dict(entry("M", "megvii", "megvii", 1.0, 67.8), url=None)]
    assert readme_table.rows(entries + timm) == [
        "| `F` | keras.applications, paddle | alpha 0.35, 0.5, 1.0, 1.25 | `imagenet` 60.0-70.0, "
        "`paddle` 64.0-76.0, `paddle_ssld` 79.0 | 224 | 0.35-1.25M |",
        "| `H` | torchvision | alpha 1.0 | `imagenet` 70.0 | 224 | 1.00M |",
        "| `T` | timm | alpha 1.0 | `imagenet` = `timm` 73.8, `timm_r256` 74.5 | 224/256 "
        "| 1.00M |",
        "| `M` | megvii | alpha 1.0 | `megvii` 67.8 | 224 | 1.00M |"]
