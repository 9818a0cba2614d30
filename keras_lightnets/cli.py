"""The `keras-lightnets` command.

User errors (bad arguments, unknown models, unreadable files) print one line
and exit with code 2; they never print a traceback.
"""

import argparse
import os
import sys

EXIT_USAGE = 2


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def _weights_arg(value):
    return None if value in (None, "none", "None") else value


def _format_int(n):
    return f"{n:,}"


def _entry(name):
    from keras_lightnets import registry

    try:
        return registry.get_entry(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _build(name, weights=None, **kwargs):
    entry = _entry(name)
    try:
        return entry, entry.build(weights=_weights_arg(weights), **kwargs)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _print_profile(model, out):
    from keras_lightnets import profile

    p = profile(model)
    rows = [
        ("params", _format_int(p["params"])),
        ("trainable params", _format_int(p["trainable_params"])),
        ("MACs", f"{p['macs'] / 1e6:.1f} M at {p['input_size'][0]}x{p['input_size'][1]}"),
        ("peak activations", f"{p['peak_activation_bytes'] / 2**20:.2f} MiB (float32, batch 1)"),
        ("weights size", f"{p['size_bytes'] / 2**20:.2f} MiB"),
    ]
    for key, value in rows:
        print(f"  {key:<18} {value}", file=out)
    return p


def _classify(entry, model, image, top, out):
    import numpy as np

    from keras_lightnets import imagenet

    size = tuple(model.inputs[0].shape[1:3])
    if None in size:
        size = (224, 224)
    if image is None:
        # A deterministic synthetic photo, so the demo needs no file.
        rows, cols = np.mgrid[0 : size[0], 0 : size[1]]
        pixels = np.stack([rows * 255 / size[0], cols * 255 / size[1],
                           np.full(size, 128.0)], axis=-1)
        batch = pixels[None].astype("float32")
        label = "a synthetic gradient image"
    else:
        if not os.path.isfile(image):
            raise UserError(f"No image file at this path. Received: image={image!r}")
        try:
            batch = imagenet.load_image(image, size)
        except OSError as exc:
            raise UserError(f"Cannot read the image {image!r}: {exc}") from None
        label = image
    preds = model.predict(entry.preprocess_input(batch), verbose=0)
    print(f"Top-{top} for {label}:", file=out)
    if preds.shape[-1] != 1000:
        best = np.argsort(-preds[0])[:top]
        for i in best:
            print(f"  class {int(i):>4}  {float(preds[0, i]):.4f}", file=out)
        return
    for wnid, name, score in imagenet.decode_predictions(preds, top=top)[0]:
        print(f"  {wnid}  {name:<28} {float(score):.4f}", file=out)


def cmd_list(args, out):
    from keras_lightnets import profile, registry

    print(f"{'name':<34} {'family':<18} {'params':>12} {'MACs (M)':>9}", file=out)
    for entry in registry.entries():
        if args.family and entry.family != args.family:
            continue
        model = entry.build(weights=None)
        p = profile(model)
        print(f"{entry.name:<34} {entry.family:<18} {p['params']:>12,} "
              f"{p['macs'] / 1e6:>9.1f}", file=out)


def cmd_info(args, out):
    entry, model = _build(args.name, weights=args.weights)
    print(f"{entry.name}: {entry.family} {entry.kwargs}", file=out)
    _print_profile(model, out)
    if args.summary:
        model.summary(print_fn=lambda line, **kw: print(line, file=out))


def cmd_classify(args, out):
    entry, model = _build(args.name, weights=args.weights)
    for image in args.images:
        _classify(entry, model, image, args.top, out)


def cmd_demo(args, out):
    entry, model = _build(args.model, weights=args.weights)
    print(f"Built {entry.name} ({entry.family}, weights={args.weights}):", file=out)
    _print_profile(model, out)
    _classify(entry, model, args.image, 5, out)
    if args.weights in (None, "none", "None"):
        print("(random weights: pass --weights imagenet or a file for real predictions)",
              file=out)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-lightnets",
        description="Lightweight mobile CNNs for Keras 3: list, inspect, classify, demo.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered models with params and MACs")
    p.add_argument("--family", default=None, help="only this family (e.g. MobileNetV2)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="profile of one model")
    p.add_argument("name")
    p.add_argument("--weights", default="none", help="imagenet, none or a file path")
    p.add_argument("--summary", action="store_true", help="print the layer summary too")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("classify", help="top-k ImageNet classes of images")
    p.add_argument("name")
    p.add_argument("images", nargs="+")
    p.add_argument("--weights", default="imagenet", help="imagenet, none or a file path")
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("demo", help="build a model, print its profile, classify an image")
    p.add_argument("--model", default="mobilenet_v3_small_100")
    p.add_argument("--weights", default="none", help="none (default), imagenet or a path")
    p.add_argument("--image", default=None, help="an image file (default: a synthetic one)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None, out=None):
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args, out)
    except UserError as exc:
        print(f"keras-lightnets: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
