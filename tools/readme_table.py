"""README.md's table of families and weight sources, rendered from the weights manifest.

    python tools/readme_table.py           # print the table
    python tools/readme_table.py --write   # put it into README.md between its markers
    python tools/readme_table.py --check   # exit 1 if README.md's table differs

One row per family and weight set (the manifest's `weights`, what `weights=` takes; "imagenet"
first, then the other sets by name): the source of its files, the variants with files in the set,
the input sizes the publisher has files for, the publisher's top-1 at 224 px (the manifest's
`top1`) and the params of those variants with their classifier. A registered family without
published weights gets a row of its own, its params from the registry's table. No figure is
typed here: edit weights_manifest.json, then run `--write`; tests/test_readme_table.py fails on
drift.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN = "<!-- weights-table: rendered by tools/readme_table.py from weights_manifest.json -->"
END = "<!-- /weights-table -->"
HEADER = ("| family | `weights=` | from | variants with weights | input px | top-1 % at 224 px "
          "| params |\n|---|---|---|---|---|---|---|")


def _value(v):
    return v if isinstance(v, str) else repr(v)


def _variants(variants):
    """`alpha 0.75, 1.0, 1.0 minimalistic` for the family's distinct variant dicts ("-" for
    a family of one model, e.g. NASNetMobile)."""
    if not any(variants):
        return "-"
    keys = [k for k in variants[0] if len({repr(v.get(k)) for v in variants}) > 1]
    keys = keys or list(variants[0])[:1]
    if not keys:  # a family of one variant (MobileNetV4 Conv-Medium)
        return "-"
    order = sorted(variants, key=lambda v: [(str(type(v.get(k))), v.get(k)) for k in keys])
    words = []
    for variant in order:
        word = _value(variant[keys[0]])
        for k in keys[1:]:
            if variant[k] is True:
                word += f" {k}"
            elif variant[k] not in (False, None):
                word += f" {k}={_value(variant[k])}"
        words.append(word)
    return f"{keys[0]} {', '.join(words)}"


def _span(values, fmt, unit=""):
    if not values:
        return "-"
    low, high = fmt(min(values)), fmt(max(values))
    return (low if low == high else f"{low}-{high}") + unit


def _millions(n):
    return f"{n / 1e6:.2f}"


def rows(entries, unweighted=None):
    """Table rows (strings) from manifest entries, in the manifest's order of families and,
    within a family, "imagenet" first, then the other weight sets by name.

    `unweighted`: `{family: [params of each registered variant]}` of the families without
    published weights, each a row after the others.
    """
    groups, order = {}, {}
    for e in entries:
        order.setdefault(e["family"], len(order))
        groups.setdefault((e["family"], e["weights"]), []).append(e)
    lines = []
    for family, weights in sorted(groups, key=lambda k: (order[k[0]], k[1] != "imagenet", k[1])):
        group = groups[family, weights]
        source = "/".join(dict.fromkeys(e["source"].split()[0] for e in group))
        variants = []
        for e in group:
            if e["variant"] not in variants:
                variants.append(e["variant"])
        at_224 = [e for e in group if e["input_size"] == 224]
        sizes = "/".join(str(s) for s in sorted({e["input_size"] for e in group}))
        # No file at 224 px (MobileNetV4 Conv-Large): no top-1 in this column.
        top1 = _span([e["top1"] for e in at_224], lambda t: f"{t:.1f}") if at_224 else "-"
        params = _span([e["params"] for e in at_224 or group if e["include_top"]], _millions,
                       "M")
        lines.append(f"| `{family}` | `{weights}` | {source} | {_variants(variants)} | {sizes} "
                     f"| {top1} | {params} |")
    for family, params in (unweighted or {}).items():
        params = _span(params, _millions, "M")
        lines.append(f"| `{family}` | - | none published | - | - | - | {params} |")
    return lines


def render(entries, unweighted=None):
    """The README block: markers, header and rows."""
    return "\n".join([BEGIN, HEADER, *rows(entries, unweighted), END])


def current():
    """The block rendered from the installed manifest and registry."""
    from keras_lightnets import registry
    from keras_lightnets.weights import manifest

    entries = manifest.entries()
    weighted = {e["family"] for e in entries}
    table = registry.complexity_table()
    unweighted = {f: [table[n]["params"] for n in registry.list_models(f)]
                  for f in registry.families() if f not in weighted}
    return render(entries, unweighted)


def in_readme(text):
    """README.md's block between the markers, markers included, or None."""
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.S)
    return match.group(0) if match else None


def main(argv):
    block = current()
    text = README.read_text(encoding="utf-8")
    found = in_readme(text)
    if "--write" in argv:
        if found is None:
            sys.exit(f"README.md has no '{BEGIN}' ... '{END}' block")
        README.write_text(text.replace(found, block), encoding="utf-8")
    elif "--check" in argv:
        if found != block:
            sys.exit("README.md's weights table differs from the manifest: "
                     "run `python tools/readme_table.py --write`")
    else:
        print(block)


if __name__ == "__main__":
    main(sys.argv[1:])
