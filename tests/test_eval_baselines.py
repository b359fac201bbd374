"""The evaluation's image-blind references and diagnostics against hand-computed values: the per-pixel
median depth map, the spread of a prediction around the mean map, and the box-hit counts."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tasks.depth.evaluate import MEDIAN_BINS, SpreadVsMap, depth_statistics
from pipeline.tasks.depth.metrics import MAX_DEPTH, MIN_DEPTH
from pipeline.tasks.insseg.evaluate import box_hits

BIN = (MAX_DEPTH - MIN_DEPTH) / MEDIAN_BINS


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning",
                            "ignore:Mean of empty slice:RuntimeWarning")
def test_median_map_matches_numpy_within_a_bin_and_ignores_invalid_pixels():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0.5, 9.5, size=(25, 6, 5))
    maps[rng.random(maps.shape) < 0.3] = 0.0  # sensor holes
    maps[:, 0, 0] = 0.0  # a pixel valid in no map: takes the median of every valid pixel
    maps[3, 1, 1] = 12.0  # beyond MAX_DEPTH: invalid as well
    stats = depth_statistics(iter(maps))
    valid = np.where((maps > MIN_DEPTH) & (maps < MAX_DEPTH), maps, np.nan)
    expected = np.nanmedian(valid, axis=0)
    expected[0, 0] = np.nanmedian(valid)
    assert np.abs(stats.median() - expected).max() < BIN
    np.testing.assert_allclose(stats.mean()[1:, 1:], np.nanmean(valid, axis=0)[1:, 1:], rtol=1e-6)
    # the median resists an outlier the mean follows: 2, 2, 2, 9 -> median 2, mean 3.75
    skewed = depth_statistics(iter(np.array([2.0, 2.0, 2.0, 9.0])[:, None, None]))
    assert abs(float(skewed.median()[0, 0]) - 2.0) < BIN and skewed.mean()[0, 0] == pytest.approx(3.75)


def test_spread_tells_a_collapsed_model_from_one_that_follows_the_scene():
    rng = np.random.default_rng(1)
    mean_map = rng.uniform(2, 4, size=(48, 64)).astype(np.float32)
    gts = [mean_map + rng.normal(0, 0.5, size=mean_map.shape).astype(np.float32) for _ in range(3)]

    def result(predict) -> dict:
        spread = SpreadVsMap(mean_map)
        for gt in gts:
            spread.add(predict(gt), gt)
        return spread.result()

    collapsed = result(lambda gt: mean_map)
    assert collapsed["deviation_ratio"] == 0.0 and collapsed["pred_rms_deviation"] == 0.0
    assert collapsed["gt_rms_deviation"] == pytest.approx(0.5, rel=0.05)
    halfway = result(lambda gt: mean_map + 0.5 * (gt - mean_map))
    assert halfway["deviation_ratio"] == pytest.approx(0.5)
    assert halfway["deviation_correlation"] == pytest.approx(1.0)
    wrong_way = result(lambda gt: mean_map - (gt - mean_map))
    assert wrong_way["deviation_ratio"] == pytest.approx(1.0)
    assert wrong_way["deviation_correlation"] == pytest.approx(-1.0)


def test_box_hits_counts_covered_objects_by_iou_and_class():
    records = [{"image_id": 1, "annotations": [
        {"bbox": [0, 0, 10, 10], "category_id": 1},
        {"bbox": [40, 40, 10, 10], "category_id": 2},
        {"bbox": [0, 0, 10, 10], "category_id": 3, "iscrowd": 1}]},  # crowd: never counted
        {"image_id": 2, "annotations": [{"bbox": [5, 5, 4, 4], "category_id": 1}]}]
    results = [{"image_id": 1, "bbox": [0, 0, 10, 8], "category_id": 2},  # IoU 0.8 with object 1, wrong class
               {"image_id": 1, "bbox": [40, 40, 10, 6], "category_id": 2},  # IoU 0.6, right class
               {"image_id": 1, "bbox": [40, 40, 10, 4], "category_id": 2},  # IoU 0.4: a miss
               {"image_id": 2, "bbox": [100, 100, 4, 4], "category_id": 1}]  # nowhere near
    assert box_hits(records, results) == {"iou": 0.5, "gt_objects": 3, "gt_found": 2,
                                          "gt_found_right_class": 1, "detections": 4,
                                          "detections_on_an_object": 2}
    assert box_hits(records, results, threshold=0.3)["detections_on_an_object"] == 3
