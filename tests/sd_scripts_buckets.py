"""Run by the trainer's python with sd-scripts' folder as the working directory: buckets by sd-scripts' own code.

stdin: {"settings": [{resolution: [w, h], enable_bucket, min_bucket_reso, max_bucket_reso, bucket_reso_steps,
bucket_no_upscale}, ...], "sizes": [[w, h], ...]}. stdout (last line): for each setting, for each size,
{"bucket": [w, h], "resized": [w, h], "crop": [left, top]} or {"error": "<exception type>"}.

The settings go through the dataset's own adjustment of min/max (`adjust_min_max_bucket_reso_by_steps`), then a
`BucketManager` made as `BaseDataset.make_buckets` makes it, `select_bucket`, and the real
`trim_and_resize_if_required`; only the resize itself is replaced, by a picture whose pixels hold their own
coordinates, so that the crop sd-scripts' code makes can be read off the first pixel it keeps.
"""

from __future__ import annotations

import json
import sys

import numpy as np

sys.path.insert(0, ".")
from library import train_util  # noqa: E402


def coordinates(width: int, height: int) -> np.ndarray:
    return np.arange(width * height, dtype=np.int64).reshape(height, width, 1)


def fake_resize(image, width, height, resized_width, resized_height, resize_interpolation=None):
    return coordinates(int(resized_width), int(resized_height))


def manager(s: dict) -> train_util.BucketManager:
    resolution = tuple(s["resolution"])
    if not s["enable_bucket"]:
        bm = train_util.BucketManager(False, resolution, None, None, None)
        bm.set_predefined_resos([resolution])
        return bm
    lo, hi = train_util.BaseDataset.adjust_min_max_bucket_reso_by_steps(
        None, resolution, s["min_bucket_reso"], s["max_bucket_reso"], s["bucket_reso_steps"])
    bm = train_util.BucketManager(s["bucket_no_upscale"], resolution, lo, hi, s["bucket_reso_steps"])
    if not s["bucket_no_upscale"]:
        bm.make_buckets()
    return bm


def one(bm: train_util.BucketManager, width: int, height: int) -> dict:
    try:
        bucket, resized, _ = bm.select_bucket(width, height)
        bucket, resized = [int(v) for v in bucket], [int(v) for v in resized]
        if resized == [width, height]:
            image = coordinates(width, height)  # not resized: the crop is cut from the picture itself
        else:  # never read: the fake resize ignores it
            image = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (height, width, 1), (0, 0, 0))
        cropped, _, _ = train_util.trim_and_resize_if_required(False, image, tuple(bucket), tuple(resized))
        first = int(cropped[0, 0, 0])
        width_of_resized = resized[0]
        return {"bucket": bucket, "resized": resized, "crop": [first % width_of_resized, first // width_of_resized]}
    except Exception as e:  # noqa: BLE001 - what sd-scripts raises is the answer
        return {"error": type(e).__name__}


def main() -> None:
    train_util.resize_image = fake_resize
    job = json.load(sys.stdin)
    out = []
    for s in job["settings"]:
        try:
            bm = manager(s)
        except Exception as e:  # noqa: BLE001
            out.append({"error": type(e).__name__})
            continue
        out.append([one(bm, w, h) for w, h in job["sizes"]])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
