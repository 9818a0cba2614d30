"""README.md's table of families and weight sources, rendered from the weights manifest.

    python tools/readme_table.py           # print the table
    python tools/readme_table.py --write   # put it into README.md between its markers
    python tools/readme_table.py --check   # exit 1 if README.md's table differs

One row per family: the sources of its files, the variants with files, its weight sets (the
manifest's `weights`, what `weights=` takes; "imagenet" first, then by name) each with the
publisher's top-1 (the manifest's `top1`; at 224 px where a variant has a 224 px file, else at its
file's size), the input sizes the publishers have files for and the params of those variants with
their classifier. A registered family without published weights gets a row of its
own, its params from the registry's table. No figure is
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
HEADER = ("| family | from | variants with weights | `weights=` and top-1 % | input px | params |"
          "\n|---|---|---|---|---|---|")


def _value(v):
    return v if isinstance(v, str) else repr(v)


def _words(variants, keys):
    """`0.75, 1.0, 1.0 minimalistic`: the first key's values, boolean keys as flags."""
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


def _variants(variants):
    """`alpha 0.75, 1.0, 1.0 minimalistic` for the family's distinct variant dicts; with a
    second non-boolean key, one group per its value (`groups 3: alpha 0.5, 1.0; groups 8: ...`);
    "-" for a family of one model (NASNetMobile, MobileNetV4 Conv-Medium)."""
    if not any(variants):
        return "-"
    keys = [k for k in variants[0] if len({repr(v.get(k)) for v in variants}) > 1]
    keys = keys or list(variants[0])[:1]
    if not keys:
        return "-"
    # The key with the most values is listed; other non-boolean keys group the list.
    keys.sort(key=lambda k: -len({repr(v.get(k)) for v in variants}))
    outer = [k for k in keys[1:] if not all(isinstance(v.get(k), bool) for v in variants)]
    if not outer:
        return _words(variants, keys)
    inner = [k for k in keys if k not in outer]
    groups = {}
    for v in variants:
        groups.setdefault(tuple(v.get(k) for k in outer), []).append(v)
    return "; ".join(" ".join(f"{k} {_value(x)}" for k, x in zip(outer, group, strict=True))
                     + ": " + _words(members, inner) for group, members in sorted(groups.items()))


def _span(values, fmt, unit=""):
    if not values:
        return "-"
    low, high = fmt(min(values)), fmt(max(values))
    return (low if low == high else f"{low}-{high}") + unit


def _millions(n):
    return f"{n / 1e6:.2f}"


def rows(entries, unweighted=None):
    """Table rows (strings) from manifest entries: one per family, in the manifest's order, its
    weight sets "imagenet" first, then by name, each with its publisher's top-1.

    `unweighted`: `{family: [params of each registered variant]}` of the families without
    published weights, each a row after the others.
    """
    groups, order = {}, {}
    for e in entries:
        order.setdefault(e["family"], len(order))
        groups.setdefault(e["family"], {}).setdefault(e["weights"], []).append(e)
    lines = []
    for family in sorted(groups, key=order.get):
        sets = groups[family]
        variants, shown, sizes, sources, tops = [], [], set(), [], []
        for weights in sorted(sets, key=lambda w: (w != "imagenet", w)):
            group = sets[weights]
            sources += [e["source"].split()[0] for e in group]
            sizes |= {e["input_size"] for e in group}
            # Per variant its 224 px files where the publisher has them, else its own size's.
            in_set = []
            for variant in dict.fromkeys(repr(e["variant"]) for e in group):
                files = [e for e in group if repr(e["variant"]) == variant]
                in_set += [e for e in files if e["input_size"] == 224] or files
            shown += in_set
            for e in group:
                if e["variant"] not in variants:
                    variants.append(e["variant"])
            name = f"`{weights}`"
            if (weights == group[0]["source"] and "imagenet" not in sets
                    and all(e["url"] for e in group)):
                name = f"`imagenet` = {name}"  # the family's default (manifest.entries)
            tops.append(f"{name} {_span([e['top1'] for e in in_set], lambda t: f'{t:.1f}')}")
        params = _span([e["params"] for e in shown if e["include_top"]], _millions, "M")
        lines.append(f"| `{family}` | {', '.join(dict.fromkeys(sources))} | "
                     f"{_variants(variants)} | {', '.join(tops)} | "
                     f"{'/'.join(str(s) for s in sorted(sizes))} | {params} |")
    for family, params in (unweighted or {}).items():
        params = _span(params, _millions, "M")
        lines.append(f"| `{family}` | none published | - | - | - | {params} |")
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
