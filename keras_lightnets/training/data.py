"""The ImageNet input pipeline: `tf.data` over TFRecord files.

The records are those of TensorFlow's `build_imagenet_data.py` (the TPU and
TF Model Garden format): a JPEG under `image/encoded` and a label under
`image/class/label`, 1-based (0 is the background class) unless
`label_offset=0`. `tf.data` is TensorFlow by nature and imported here
lazily; the datasets it gives feed `fit` on every Keras backend.
"""

import numpy as np

from keras_lightnets.models.common import check, check_positive

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
# Evaluation crops the central size / (size + 32) of the image, as the TPU reference does.
CROP_PADDING = 32


def _tf():
    import tensorflow as tf

    return tf


def affine_preprocessing(preprocess_input):
    """`(scale, offset)` per RGB channel such that `preprocess_input(x) == x * scale + offset`.

    Each family's `preprocess_input` is an affine map of 0-255 RGB pixels
    (identity where the model embeds its preprocessing). Reading it off
    numpy probes lets the `tf.data` graph apply it without calling backend
    ops, so the pipeline serves a JAX or PyTorch model too.

    Raises:
        ValueError: `preprocess_input` is not affine per channel.
    """
    probes = np.array([[[[0.0, 0.0, 0.0], [255.0, 255.0, 255.0], [17.0, 101.0, 230.0]]]],
                      dtype="float32")
    out = np.asarray(preprocess_input(probes.copy()), dtype="float64")[0, 0]
    offset = out[0]
    scale = (out[1] - out[0]) / 255.0
    check(np.allclose(out[2], probes[0, 0, 2] * scale + offset, atol=1e-4),
          "`preprocess_input` must be an affine map of each RGB channel.",
          preprocess_input=preprocess_input)
    return scale.astype("float32"), offset.astype("float32")


def serialize_example(jpeg_bytes, label):
    """One `tf.train.Example` in the ImageNet TFRecord layout, serialized."""
    tf = _tf()
    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg_bytes])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path, examples):
    """Writes `(jpeg_bytes, label)` pairs to the TFRecord file `path`."""
    tf = _tf()
    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for jpeg_bytes, label in examples:
            writer.write(serialize_example(jpeg_bytes, label))
            count += 1
    return count


def imagenet_dataset(
    file_pattern,
    training,
    image_size=224,
    batch_size=128,
    classes=1000,
    label_offset=1,
    preprocess_input=None,
    min_crop_area=0.08,
    shuffle_buffer=10_000,
    seed=None,
    repeat=None,
):
    """A batched ImageNet `tf.data.Dataset` of `(images, one_hot_labels)`.

    Training: files and records shuffled, Inception-style random crop
    (area fraction in `[min_crop_area, 1]`, aspect ratio 3/4 to 4/3) and
    flip, repeated, partial batches dropped. Evaluation: central crop,
    one pass, every record.

    Args:
        file_pattern: glob of TFRecord files (`.../train-*`), or a list of
            paths.
        training: whether to augment, shuffle and repeat.
        image_size: side of the square output images.
        batch_size: global batch size (a `tf.distribute` strategy splits it).
        classes: number of classes of the one-hot labels.
        label_offset: subtracted from the stored label (1 for the usual
            records, whose label 0 is the background class).
        preprocess_input: the model family's `preprocess_input`, applied
            in the graph (see `affine_preprocessing`); `None` leaves 0-255
            pixels.
        min_crop_area: smallest crop area fraction (a `Recipe` field).
        shuffle_buffer: records in the shuffle buffer.
        seed: seed for file order, shuffling and augmentation.
        repeat: repeat forever; defaults to `training`.

    Returns:
        A `tf.data.Dataset` of float32 images `(batch, size, size, 3)` and
        float32 one-hot labels `(batch, classes)`.
    """
    tf = _tf()
    check_positive("image_size", image_size, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("classes", classes, integer=True)
    check(0 < min_crop_area <= 1, "`min_crop_area` must be in (0, 1].",
          min_crop_area=min_crop_area)
    if isinstance(file_pattern, (list, tuple)):
        files = tf.data.Dataset.from_tensor_slices([str(f) for f in file_pattern])
        if training:
            files = files.shuffle(len(file_pattern), seed=seed)
    else:
        check(bool(tf.io.gfile.glob(str(file_pattern))), "No TFRecord file matches the pattern.",
              file_pattern=file_pattern)
        files = tf.data.Dataset.list_files(str(file_pattern), shuffle=training, seed=seed)
    repeat = training if repeat is None else repeat
    scale, offset = (None, None)
    if preprocess_input is not None:
        scale, offset = affine_preprocessing(preprocess_input)

    # Evaluation and seeded runs keep a fixed record order; training may take records as
    # they arrive.
    ds = files.interleave(tf.data.TFRecordDataset, cycle_length=8,
                          num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=not training or seed is not None)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    if repeat:
        ds = ds.repeat()

    def parse(record):
        parsed = tf.io.parse_single_example(record, {
            IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        })
        data = parsed[IMAGE_KEY]
        if training:
            image = _random_crop(tf, data, image_size, min_crop_area, seed)
            image = tf.image.random_flip_left_right(image, seed=seed)
        else:
            image = _central_crop(tf, data, image_size)
        image = tf.cast(image, tf.float32)
        if scale is not None:
            image = image * scale + offset
        label = tf.one_hot(parsed[LABEL_KEY] - label_offset, classes, dtype=tf.float32)
        return image, label

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)


def _random_crop(tf, data, size, min_area, seed):
    shape = tf.image.extract_jpeg_shape(data)
    begin, crop, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(min_area, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
    image = tf.image.decode_and_crop_jpeg(data, window, channels=3)
    return tf.image.resize(image, (size, size), method="bilinear")


def _central_crop(tf, data, size):
    shape = tf.image.extract_jpeg_shape(data)
    side = tf.cast(
        size / (size + CROP_PADDING) * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32),
        tf.int32,
    )
    top = (shape[0] - side + 1) // 2
    left = (shape[1] - side + 1) // 2
    window = tf.stack([top, left, side, side])
    image = tf.image.decode_and_crop_jpeg(data, window, channels=3)
    return tf.image.resize(image, (size, size), method="bilinear")
