"""Does MobileNetV4-Hybrid's Mobile MQA block map onto Keras layers and builtin TFLite ops?

timm's `MobileAttention(use_multi_query=True)`: batch norm, then `MultiQueryAttention2d`
(1x1 query projection to heads x key_dim; keys and values through a strided 3x3
depthwise conv + batch norm when `kv_stride` > 1, then a 1x1 projection to one shared
head; softmax(q k^T / sqrt(key_dim)) v; 1x1 output projection), layer scale, residual.

Here the attention core is one Keras layer (two matmuls and a softmax on 3-D tensors:
with a single key/value head the query heads fold into the query axis), layer scale a
per-channel `Multiply` by a weight vector; the rest are stock layers. The script copies a
timm block's random weights in, compares the outputs, and converts the model to float32
and full-int8 TFLite, listing the ops and the int8 file's agreement.

    PYTHONPATH=. python benchmarks/investigations/mnv4_mqa_tflite.py
"""

import sys
import types

import keras
import numpy as np
from keras import layers, ops

sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("stub"))

HEADS, KEY_DIM, CHANNELS, SIZE, KV_STRIDE = 4, 64, 160, 14, 2  # hybrid-medium stage 2


class MultiQueryCore(layers.Layer):
    """softmax(q k^T * scale) v with `heads` query heads sharing one key/value head."""

    def __init__(self, heads, key_dim, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.key_dim = heads, key_dim

    def call(self, inputs):
        q, k, v = inputs
        rows, cols = q.shape[1], q.shape[2]
        q = ops.reshape(q, (-1, rows * cols * self.heads, self.key_dim)) * self.key_dim ** -0.5
        k = ops.reshape(k, (-1, k.shape[1] * k.shape[2], self.key_dim))
        v = ops.reshape(v, (-1, v.shape[1] * v.shape[2], v.shape[3]))
        attn = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))), axis=-1)
        return ops.reshape(ops.matmul(attn, v), (-1, rows, cols, self.heads * v.shape[-1]))


class LayerScale(layers.Layer):
    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")

    def call(self, x):
        return x * self.gamma


def keras_block():
    x_in = keras.Input((SIZE, SIZE, CHANNELS))
    x = layers.BatchNormalization(epsilon=1e-5, name="norm")(x_in)
    q = layers.Conv2D(HEADS * KEY_DIM, 1, use_bias=False, name="attn_query_proj")(x)
    kv = []
    for part in ("key", "value"):
        h = layers.ZeroPadding2D(1, name=f"attn_{part}_pad")(x)
        h = layers.DepthwiseConv2D(3, KV_STRIDE, use_bias=False, name=f"attn_{part}_down_conv")(h)
        h = layers.BatchNormalization(epsilon=1e-5, name=f"attn_{part}_norm")(h)
        kv.append(layers.Conv2D(KEY_DIM, 1, use_bias=False, name=f"attn_{part}_proj")(h))
    o = MultiQueryCore(HEADS, KEY_DIM, name="attn_core")([q, *kv])
    o = layers.Conv2D(CHANNELS, 1, use_bias=False, name="attn_output_proj")(o)
    o = LayerScale(name="layer_scale")(o)
    return keras.Model(x_in, layers.Add(name="add")([x_in, o]))


def copy_from_timm(model, block):
    sd = {k: v.detach().numpy() for k, v in block.state_dict().items()}
    for layer in model.layers:
        key = layer.name.replace("attn_", "attn.").replace("_proj", ".proj").replace(
            "_down_conv", ".down_conv").replace("_norm", ".norm")
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([sd[f"{key}.{n}"] for n in ("weight", "bias", "running_mean",
                                                            "running_var")])
        elif isinstance(layer, layers.DepthwiseConv2D):
            layer.set_weights([sd[f"{key}.weight"].transpose(2, 3, 0, 1)])
        elif isinstance(layer, layers.Conv2D):
            layer.set_weights([sd[f"{key}.weight"].transpose(2, 3, 1, 0)])
        elif isinstance(layer, LayerScale):
            layer.set_weights([sd["layer_scale.gamma"]])


def main():
    import torch
    from timm.models._efficientnet_blocks import MobileAttention

    torch.manual_seed(0)
    block = MobileAttention(CHANNELS, CHANNELS, num_heads=HEADS, key_dim=KEY_DIM,
                            value_dim=KEY_DIM, use_multi_query=True, kv_stride=KV_STRIDE,
                            layer_scale_init_value=1.0).eval()
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        block.layer_scale.gamma.uniform_(0.5, 1.5)
    model = keras_block()
    copy_from_timm(model, block)
    x = np.random.default_rng(0).standard_normal((8, SIZE, SIZE, CHANNELS)).astype("float32")
    with torch.no_grad():
        ref = block(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    y = np.asarray(model(x))
    print(f"timm vs Keras: max |diff| {np.abs(y - ref).max():.2e} "
          f"(max |out| {np.abs(ref).max():.1f})")

    import os
    import tempfile

    from keras_lightnets import export

    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("float32", "int8"):
            report = export.to_tflite(model, os.path.join(tmp, f"{kind}.tflite"),
                                      None if kind == "float32" else "int8",
                                      representative_data=x[:4] if kind == "int8" else None,
                                      verify_data=x[4:], tolerance=0.01 if kind == "int8" else None,
                                      progress=False)
            print(f"{kind}: ops {sorted(report.ops)}; max rel diff {report.max_rel_diff:.2e}, "
                  f"cosine {report.cosine}")


if __name__ == "__main__":
    main()
