"""Put on PYTHONPATH only by tests/test_browser_reg.py for its app server: the standalone Host's generator becomes a
drawing stand-in (the logic of a reg batch in a browser needs no model; tests/test_reg_real.py makes real images)."""

import time

from PIL import Image, ImageDraw

from lib_lorakit.evaluate import GenImage
from lib_lorakit.host import StandaloneHost


class SlowDrawingGenerator:
    name = "drawing"

    def generate(self, requests, *, progress=None, cancel=None):
        made = []
        for i, req in enumerate(requests):
            if cancel is not None and cancel.is_set():
                break
            time.sleep(0.3)  # long enough for the page to see the bar move
            image = Image.new("RGB", (req.width, req.height), (120, 120, 120))
            ImageDraw.Draw(image).text((2, 2), f"{req.seed}", fill=(255, 255, 255))
            made.append(GenImage(image=image, infotext=f"{req.prompt}\nSteps: {req.steps}, Seed: {req.seed}, "
                                 f"Size: {req.width}x{req.height}", seed=req.seed, request=req))
            if progress:
                progress(i + 1, len(requests), f"seed {req.seed}")
        return made


StandaloneHost.generator = lambda self: SlowDrawingGenerator()
