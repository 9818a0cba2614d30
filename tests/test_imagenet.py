"""ImageNet helpers: the shipped class index and decode_predictions."""

import json

import numpy as np
import pytest
from conftest import SAMPLE, shared_file

from keras_lightnets import imagenet


def test_class_index_ships_with_the_package_and_matches_the_standard_one():
    index = imagenet.class_index()
    assert len(index) == 1000
    assert index[0] == ("n01440764", "tench")
    with open(shared_file(SAMPLE / "imagenet_class_index.json")) as f:
        standard = json.load(f)
    assert {int(k): tuple(v) for k, v in standard.items()} == index


def test_decode_predictions_orders_and_validates():
    preds = np.zeros((2, 1000), "float32")
    preds[0, [5, 7, 9]] = [0.2, 0.5, 0.3]
    preds[1, 999] = 1.0
    out = imagenet.decode_predictions(preds, top=3)
    assert [d[0] for d in out[0]] == [imagenet.class_index()[i][0] for i in (7, 9, 5)]
    assert out[1][0][:2] == ("n15075141", "toilet_tissue")
    with pytest.raises(ValueError, match="Received: preds.shape=\\(3, 10\\)"):
        imagenet.decode_predictions(np.zeros((3, 10)))
